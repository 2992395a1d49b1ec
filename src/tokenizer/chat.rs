//! Chat templates: the model's own Jinja template (`tokenizer.chat_template`)
//! rendered with minijinja, with the helpers real templates call
//! (`raise_exception`, `strftime_now`, `tojson`, Python string methods).
//!
//! Models without a template get a documented fallback, reported by
//! [`ChatTemplate::fallback_note`]: Gemma's turn format for `gemma*`
//! architectures (`<start_of_turn>user … <end_of_turn>`, system text folded
//! into the first user turn, as Gemma's own template does), ChatML otherwise.

use minijinja::{context, Environment, Error, ErrorKind};
use serde::{Deserialize, Serialize};

use super::{Result, TokenizerError};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
}

impl ChatMessage {
    pub fn new(role: &str, content: &str) -> Self {
        Self {
            role: role.to_string(),
            content: content.to_string(),
        }
    }
}

const GEMMA_FALLBACK: &str = "{{ bos_token }}{% set ns = namespace(sys='') %}{% for m in messages %}\
{% if m.role == 'system' %}{% set ns.sys = m.content + '\\n\\n' %}\
{% else %}{{ '<start_of_turn>' + ('model' if m.role == 'assistant' else m.role) + '\\n' + ns.sys + (m.content | trim) + '<end_of_turn>\\n' }}{% set ns.sys = '' %}\
{% endif %}{% endfor %}{% if add_generation_prompt %}{{ '<start_of_turn>model\\n' }}{% endif %}";

const CHATML_FALLBACK: &str = "{% for m in messages %}{{ '<|im_start|>' + m.role + '\\n' + m.content + '<|im_end|>\\n' }}{% endfor %}\
{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

#[derive(Debug, Clone)]
pub struct ChatTemplate {
    source: String,
    fallback: Option<&'static str>,
    bos_token: String,
    eos_token: String,
}

impl ChatTemplate {
    pub fn from_gguf(
        template: Option<&str>,
        arch: &str,
        bos_token: String,
        eos_token: String,
    ) -> Result<Self> {
        let (source, fallback) = match template {
            Some(t) => (t.to_string(), None),
            None if arch.starts_with("gemma") => {
                (GEMMA_FALLBACK.to_string(), Some("Gemma turn format"))
            }
            None => (CHATML_FALLBACK.to_string(), Some("ChatML")),
        };
        let t = Self {
            source,
            fallback,
            bos_token,
            eos_token,
        };
        // Compile once now so a broken template is reported at load time.
        t.env()?;
        Ok(t)
    }

    /// `Some(description)` when the file has no template and a fallback is used.
    pub fn fallback_note(&self) -> Option<String> {
        self.fallback.map(|f| {
            format!("the model file has no chat template; using the built-in {f} fallback")
        })
    }

    fn env(&self) -> Result<Environment<'static>> {
        let mut env = Environment::new();
        minijinja_contrib::add_to_environment(&mut env);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function(
            "raise_exception",
            |msg: String| -> std::result::Result<String, Error> {
                Err(Error::new(ErrorKind::InvalidOperation, msg))
            },
        );
        env.add_function("strftime_now", |fmt: String| {
            chrono::Local::now().format(&fmt).to_string()
        });
        env.add_template_owned("chat", self.source.clone())
            .map_err(|e| TokenizerError::Template(e.to_string()))?;
        Ok(env)
    }

    pub fn render(&self, messages: &[ChatMessage], add_generation_prompt: bool) -> Result<String> {
        for m in messages {
            if !matches!(m.role.as_str(), "system" | "user" | "assistant") {
                return Err(TokenizerError::Template(format!(
                    "unknown role {:?}",
                    m.role
                )));
            }
        }
        let env = self.env()?;
        let tmpl = env
            .get_template("chat")
            .map_err(|e| TokenizerError::Template(e.to_string()))?;
        tmpl.render(context! {
            messages => messages,
            add_generation_prompt => add_generation_prompt,
            bos_token => self.bos_token,
            eos_token => self.eos_token,
        })
        .map_err(|e| TokenizerError::Template(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msgs() -> Vec<ChatMessage> {
        vec![
            ChatMessage::new("system", "Be brief."),
            ChatMessage::new("user", "Hi"),
            ChatMessage::new("assistant", "Hello!"),
            ChatMessage::new("user", "Bye"),
        ]
    }

    #[test]
    fn gemma_fallback_folds_system_into_first_user_turn() {
        let t = ChatTemplate::from_gguf(None, "gemma3", "<bos>".into(), "<eos>".into()).unwrap();
        assert!(t.fallback_note().unwrap().contains("Gemma"));
        let out = t.render(&msgs(), true).unwrap();
        assert_eq!(
            out,
            "<bos><start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n<start_of_turn>model\nHello!<end_of_turn>\n\
             <start_of_turn>user\nBye<end_of_turn>\n<start_of_turn>model\n"
        );
    }

    #[test]
    fn chatml_fallback() {
        let t = ChatTemplate::from_gguf(None, "llama", "".into(), "".into()).unwrap();
        let out = t.render(&msgs()[1..2], true).unwrap();
        assert_eq!(
            out,
            "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
        );
    }

    #[test]
    fn helpers_real_templates_use() {
        let src = "{% if messages[0]['role'] != 'user' %}{{ raise_exception('first must be user') }}{% endif %}\
                   {{ messages[0].content.strip() | tojson }}{{ strftime_now('%Y') | length }}";
        let t = ChatTemplate::from_gguf(Some(src), "llama", "".into(), "".into()).unwrap();
        assert_eq!(
            t.render(&[ChatMessage::new("user", "  x ")], false)
                .unwrap(),
            "\"x\"4"
        );
        let err = t
            .render(&[ChatMessage::new("system", "s")], false)
            .unwrap_err()
            .to_string();
        assert!(err.contains("first must be user"), "{err}");
    }

    #[test]
    fn unknown_role_and_broken_template_are_errors() {
        let t = ChatTemplate::from_gguf(None, "llama", "".into(), "".into()).unwrap();
        assert!(t.render(&[ChatMessage::new("wizard", "x")], true).is_err());
        assert!(ChatTemplate::from_gguf(Some("{% for %}"), "llama", "".into(), "".into()).is_err());
    }
}
