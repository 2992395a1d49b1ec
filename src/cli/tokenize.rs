//! `tandem tokenize`: the ids (and pieces) a text becomes.

use anyhow::Result;
use clap::Args;

use super::ModelArgs;

#[derive(Args)]
pub struct TokenizeArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Do not add BOS even where the model asks for it.
    #[arg(long = "no-bos")]
    no_bos: bool,
    /// Print a JSON array of ids.
    #[arg(long)]
    json: bool,
    text: String,
}

pub fn run(a: TokenizeArgs) -> Result<()> {
    let f = tandem::gguf::GgufFile::open(a.model.path()?)?;
    let tok = tandem::tokenizer::Tokenizer::from_gguf(&f)?;
    let ids = tok.encode(&a.text, !a.no_bos)?;
    if a.json {
        println!("{}", serde_json::to_string(&ids)?);
    } else {
        for id in ids {
            println!("{id:>7} -> {:?}", String::from_utf8_lossy(tok.piece(id)));
        }
    }
    Ok(())
}
