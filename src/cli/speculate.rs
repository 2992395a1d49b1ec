//! Speculative-decoding flags shared by `generate` and `bench spec`: which
//! proposer (`--spec ngram`, `--draft MODEL`) and how many guesses per round
//! (`--k 4`, or `--k auto` for the governor).

use anyhow::{bail, Context, Result};
use clap::Args;

use tandem::backend::cpu::CpuBackend;
use tandem::model::LoadedModel;
use tandem::sampler::SamplingParams;
use tandem::spec::{DraftProposer, GovernorConfig, NgramProposer, Proposer};

#[derive(Args, Clone, Default)]
pub struct SpecArgs {
    /// Speculate with a proposer that needs no model: `ngram` (prompt lookup).
    #[arg(long = "spec")]
    pub spec: Option<String>,
    /// Speculate with this draft model (a path or catalog name; same vocabulary).
    #[arg(long = "draft")]
    pub draft: Option<String>,
    /// Guesses per round: a number, or `auto` to let the governor choose.
    #[arg(long = "k", default_value = "auto")]
    pub k: String,
    /// Largest k the governor may choose.
    #[arg(long = "k-max", default_value_t = 8)]
    pub k_max: usize,
}

impl SpecArgs {
    pub fn enabled(&self) -> bool {
        self.spec.is_some() || self.draft.is_some()
    }

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

    /// The draft model, when `--draft` names one.
    pub fn load_draft(&self) -> Result<Option<LoadedModel<CpuBackend>>> {
        let Some(name) = &self.draft else {
            return Ok(None);
        };
        let path = tandem::catalog::resolve(name)?;
        let m = LoadedModel::load(&path, CpuBackend)
            .with_context(|| format!("loading the draft {}", path.display()))?;
        Ok(Some(m))
    }

    /// The proposer these flags ask for.
    pub fn proposer<'m>(
        &self,
        draft: Option<&'m LoadedModel<CpuBackend>>,
        target: &LoadedModel<CpuBackend>,
        ctx: usize,
        sampling: &SamplingParams,
    ) -> Result<Box<dyn Proposer + 'm>> {
        match (self.spec.as_deref(), draft) {
            (Some(_), Some(_)) => bail!("use either --spec or --draft, not both"),
            (Some("ngram"), None) => Ok(Box::new(NgramProposer::default())),
            (Some(other), None) => bail!("unknown --spec {other:?} (known: ngram)"),
            (None, Some(d)) => Ok(Box::new(DraftProposer::new(d, target, ctx, sampling)?)),
            (None, None) => bail!("speculation needs --spec ngram or --draft MODEL"),
        }
    }
}
