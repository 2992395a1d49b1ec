//! Speculative-decoding flags: which proposer (`--spec ngram`, `--draft
//! MODEL`, shared by `generate` and `bench spec`) and, for `generate`, how
//! many guesses per round (`--k 4`, or `--k auto` for the governor).

use anyhow::{bail, Context, Result};
use clap::Args;

use tandem::backend::device::{AnyBackend, Device};
use tandem::model::LoadedModel;
use tandem::spec::{GovernorConfig, ProposerKind};

#[derive(Args, Clone, Default)]
pub struct ProposerArgs {
    /// Speculate with a proposer that needs no model: `ngram` (prompt lookup).
    #[arg(long = "spec")]
    pub spec: Option<String>,
    /// Speculate with this draft model (a path or catalog name; same vocabulary).
    #[arg(long = "draft")]
    pub draft: Option<String>,
}

impl ProposerArgs {
    pub fn enabled(&self) -> bool {
        self.spec.is_some() || self.draft.is_some()
    }

    /// The draft model, when `--draft` names one.
    pub fn load_draft(&self, device: Device) -> Result<Option<LoadedModel<AnyBackend>>> {
        let Some(name) = &self.draft else {
            return Ok(None);
        };
        let path = tandem::catalog::resolve(name)?;
        let backend = AnyBackend::open(device).map_err(anyhow::Error::msg)?;
        let m = LoadedModel::load(&path, backend)
            .with_context(|| format!("loading the draft {}", path.display()))?;
        Ok(Some(m))
    }

    /// The proposer these flags ask for; `draft` is what [`Self::load_draft`]
    /// returned.
    pub fn kind<'m>(
        &self,
        draft: Option<&'m LoadedModel<AnyBackend>>,
    ) -> Result<ProposerKind<'m, AnyBackend>> {
        match (self.spec.as_deref(), draft) {
            (Some(_), Some(_)) => bail!("use either --spec or --draft, not both"),
            (Some("ngram"), None) => Ok(ProposerKind::Ngram),
            (Some(other), None) => bail!("unknown --spec {other:?} (known: ngram)"),
            (None, Some(d)) => Ok(ProposerKind::Draft(d)),
            (None, None) => bail!("speculation needs --spec ngram or --draft MODEL"),
        }
    }
}

#[derive(Args, Clone, Default)]
pub struct SpecArgs {
    #[command(flatten)]
    pub proposer: ProposerArgs,
    /// Guesses per round: a number, or `auto` to let the governor choose.
    #[arg(long = "k", default_value = "auto")]
    pub k: String,
    /// Largest k the governor may choose.
    #[arg(long = "k-max", default_value_t = 8)]
    pub k_max: usize,
}

impl SpecArgs {
    pub fn governor(&self) -> Result<GovernorConfig> {
        let fixed_k = match self.k.as_str() {
            "auto" => None,
            n => Some(
                n.parse()
                    .with_context(|| format!("--k {n}: a number or `auto`"))?,
            ),
        };
        Ok(GovernorConfig {
            k_max: self.k_max,
            fixed_k,
        })
    }
}
