//! Speculative-decoding flags: which proposer (`--spec ngram`, `--draft
//! MODEL`, shared by `generate` and `bench spec`) and, for `generate`, how
//! many guesses per round (`--k 4`, or `--k auto` for the governor).

use anyhow::{bail, Context, Result};
use clap::Args;
use tandem::backend::Backend as _;

use tandem::backend::device::AnyBackend;
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
    /// Tokens the draft scores: the vocabulary's first N (its output layer
    /// read for those rows only), `full`, or `auto`: the first 32768 of a
    /// vocabulary over 65536, where the output layer is a large share of a
    /// small model's reads.
    #[arg(long = "draft-vocab", default_value = "auto")]
    pub draft_vocab: String,
}

/// `auto`'s cut: large enough to hold nearly every token of code and
/// English text in the Qwen2 vocabulary (ids are merge ranks).
const AUTO_DRAFT_VOCAB: usize = 32768;

impl ProposerArgs {
    pub fn enabled(&self) -> bool {
        self.spec.is_some() || self.draft.is_some()
    }

    /// The draft model, when `--draft` names one, on the target's device.
    pub fn load_draft(&self, target: &AnyBackend) -> Result<Option<LoadedModel<AnyBackend>>> {
        let Some(name) = &self.draft else {
            return Ok(None);
        };
        let path = tandem::catalog::resolve(name)?;
        let backend = target.beside().map_err(anyhow::Error::msg)?;
        let mut m = LoadedModel::load(&path, backend)
            .with_context(|| format!("loading the draft {}", path.display()))?;
        m.backend.prepare_for_speculation();
        if let Some(rows) = self.draft_head_rows(m.head_rows)? {
            m.limit_head(rows)
                .with_context(|| format!("cutting the draft's output layer to {rows} rows"))?;
        }
        Ok(Some(m))
    }

    /// The rows `--draft-vocab` keeps of a `vocab`-token output layer, if
    /// it cuts any.
    fn draft_head_rows(&self, vocab: usize) -> Result<Option<usize>> {
        let rows = match self.draft_vocab.as_str() {
            "full" => return Ok(None),
            "auto" if vocab > 2 * AUTO_DRAFT_VOCAB => AUTO_DRAFT_VOCAB,
            "auto" => return Ok(None),
            n => match n.parse::<usize>() {
                Ok(n) if n > 0 => n,
                _ => bail!("--draft-vocab {n:?}: a positive number, `full` or `auto`"),
            },
        };
        Ok((rows < vocab).then_some(rows))
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
