//! `tandem generate`: one prompt in, streamed text out (or one JSON object).

use std::io::Write;
use tandem::backend::Backend as _;

use anyhow::Result;
use clap::Args;
use serde_json::json;

use super::speculate::SpecArgs;
use super::{ModelArgs, SamplingArgs};
use tandem::engine::generate::Speculation;
use tandem::engine::request::Request;
use tandem::engine::Session;
use tandem::spec::Governor;
use tandem::tokenizer::ChatMessage;

#[derive(Args)]
pub struct GenerateArgs {
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    sampling: SamplingArgs,
    #[command(flatten)]
    spec: SpecArgs,
    /// The prompt.
    #[arg(short = 'p', long = "prompt")]
    prompt: String,
    /// Tokens to generate at most.
    #[arg(short = 'n', long = "n-predict", default_value_t = 64)]
    n: usize,
    /// Wrap the prompt in the model's chat template as a user message.
    #[arg(long)]
    chat: bool,
    /// System message (with --chat).
    #[arg(long)]
    system: Option<String>,
    /// Stop when this text appears (repeatable).
    #[arg(long = "stop")]
    stop: Vec<String>,
    /// Print one JSON object instead of streaming text.
    #[arg(long)]
    json: bool,
    /// Candidates reported per token with --json.
    #[arg(long = "n-probs", default_value_t = 5)]
    n_probs: usize,
}

pub fn run(a: GenerateArgs) -> Result<()> {
    let sampling = a.sampling.params(if a.json { a.n_probs } else { 0 })?;
    let model = a.model.load()?;
    let text = if a.chat {
        let mut msgs = Vec::new();
        if let Some(s) = &a.system {
            msgs.push(ChatMessage::new("system", s));
        }
        msgs.push(ChatMessage::new("user", &a.prompt));
        model.tokenizer.chat_template.render(&msgs, true)?
    } else {
        a.prompt.clone()
    };
    let prompt = model.tokenizer.encode(&text, true)?;
    let mut session = Session::new(&model, a.model.ctx);
    session.on_progress(super::prefill_bar());
    let req = Request {
        prompt: prompt.clone(),
        max_tokens: a.n,
        sampling: sampling.clone(),
        stop: a.stop.clone(),
        ignore_eos: false,
    };
    let draft = a.spec.proposer.load_draft(&model.backend)?;
    let mut speculation = if a.spec.proposer.enabled() {
        model.backend.prepare_for_speculation();
        Some((
            a.spec
                .proposer
                .kind(draft.as_ref())?
                .build(&model, a.model.ctx, &sampling)?,
            Governor::new(a.spec.governor()?),
        ))
    } else {
        None
    };
    let spec = speculation.as_mut().map(|(p, g)| Speculation {
        proposer: p.as_mut(),
        governor: g,
    });
    let stdout = std::io::stdout();
    let out = session.generate_with(&req, spec, |t| {
        if !a.json {
            let mut o = stdout.lock();
            let _ = o.write_all(t.as_bytes());
            let _ = o.flush();
        }
        true
    })?;
    if a.json {
        let logprobs: Vec<_> = out
            .logprobs
            .iter()
            .map(|s| json!({"id": s.id, "logprob": s.logprob, "top": s.top.iter().map(|(i, l)| json!([i, l])).collect::<Vec<_>>()}))
            .collect();
        let obj = json!({
            "prompt_tokens": prompt,
            "tokens": out.tokens,
            "text": out.text,
            "logprobs": logprobs,
            "stop_reason": out.stop_reason,
            "seed": sampling.seed,
            "timings": out.timings,
            "speculation": out.speculation,
        });
        println!("{obj}");
    } else {
        println!();
        let t = &out.timings;
        eprintln!(
            "[prompt: {} tokens, {:.1} tok/s | generated: {} tokens, {:.1} tok/s | stop: {:?} | seed {}]",
            t.prompt_n, t.prompt_per_second, t.predicted_n, t.predicted_per_second, out.stop_reason, sampling.seed
        );
        if let Some(s) = &out.speculation {
            eprintln!(
                "[speculation ({}): {} rounds, {} plain steps, acceptance {:.0}%, {:.2} tokens per pass, last k {}]",
                s.proposer,
                s.rounds,
                s.plain_steps,
                100.0 * s.acceptance,
                s.tokens_per_pass,
                s.last_k
            );
        }
    }
    Ok(())
}
