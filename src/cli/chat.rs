//! `tandem chat`: an interactive conversation. Ctrl-C stops the reply being
//! written; Ctrl-C (or Ctrl-D) at the prompt leaves. The session keeps the
//! conversation's KV cache, so each turn only reads its new tokens.

use std::io::{BufRead, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::Result;
use clap::Args;

use super::{ModelArgs, SamplingArgs};
use tandem::engine::generate::StopReason;
use tandem::engine::request::Request;
use tandem::engine::Session;
use tandem::tokenizer::ChatMessage;

#[derive(Args)]
pub struct ChatArgs {
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    sampling: SamplingArgs,
    /// System message.
    #[arg(long)]
    system: Option<String>,
    /// Most tokens per reply.
    #[arg(short = 'n', long = "n-predict", default_value_t = 1024)]
    n: usize,
}

pub fn run(a: ChatArgs) -> Result<()> {
    let sampling = a.sampling.params(0)?;
    let model = a.model.load()?;
    if let Some(note) = model.tokenizer.chat_template.fallback_note() {
        eprintln!("note: {note}");
    }
    let interrupted = Arc::new(AtomicBool::new(false));
    let flag = interrupted.clone();
    ctrlc::set_handler(move || flag.store(true, Ordering::SeqCst))?;

    let mut session = Session::new(&model, a.model.ctx);
    session.on_progress(super::prefill_bar());
    let mut messages = Vec::new();
    if let Some(s) = &a.system {
        messages.push(ChatMessage::new("system", s));
    }
    let stdin = std::io::stdin();
    let mut stdout = std::io::stdout();
    eprintln!(
        "chatting with {} — Ctrl-C stops a reply, Ctrl-D leaves",
        a.model.model
    );
    loop {
        print!("\n> ");
        stdout.flush()?;
        let mut line = String::new();
        interrupted.store(false, Ordering::SeqCst);
        if stdin.lock().read_line(&mut line)? == 0 || interrupted.load(Ordering::SeqCst) {
            println!();
            return Ok(());
        }
        let line = line.trim_end_matches(['\n', '\r']);
        if line.trim().is_empty() {
            continue;
        }
        messages.push(ChatMessage::new("user", line));
        let text = model.tokenizer.chat_template.render(&messages, true)?;
        let prompt = model.tokenizer.encode(&text, true)?;
        let req = Request {
            prompt,
            max_tokens: a.n,
            sampling: sampling.clone(),
            stop: vec![],
            ignore_eos: false,
        };
        let out = session.generate(&req, |t| {
            print!("{t}");
            let _ = stdout.flush();
            !interrupted.load(Ordering::SeqCst)
        });
        match out {
            Ok(out) => {
                if out.stop_reason == StopReason::Cancelled {
                    println!(" [stopped]");
                }
                messages.push(ChatMessage::new("assistant", &out.text));
            }
            Err(e) => {
                messages.pop();
                eprintln!("\nerror: {e}");
            }
        }
        println!();
    }
}
