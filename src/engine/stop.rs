//! Stop strings for streamed text: text is released only once it cannot be
//! the beginning of a stop string, so a client never receives part of one.

pub struct StopMatcher {
    stops: Vec<String>,
    held: String,
}

pub enum StopCheck {
    /// Text that is safe to emit now (may be empty).
    Emit(String),
    /// A stop string was found: the text before it, and which one.
    Stopped { before: String, stop: String },
}

impl StopMatcher {
    pub fn new(stops: &[String]) -> Self {
        Self {
            stops: stops.iter().filter(|s| !s.is_empty()).cloned().collect(),
            held: String::new(),
        }
    }

    pub fn push(&mut self, text: &str) -> StopCheck {
        self.held.push_str(text);
        let first = self
            .stops
            .iter()
            .filter_map(|s| self.held.find(s.as_str()).map(|at| (at, s)))
            .min_by_key(|(at, _)| *at);
        if let Some((at, stop)) = first {
            let stop = stop.clone();
            let before = self.held[..at].to_string();
            self.held.clear();
            return StopCheck::Stopped { before, stop };
        }
        // Hold back the longest suffix that is a prefix of some stop string.
        let keep = self
            .stops
            .iter()
            .map(|s| {
                (1..s.len().min(self.held.len() + 1))
                    .rev()
                    .find(|&n| s.is_char_boundary(n) && self.held.ends_with(&s[..n]))
                    .unwrap_or(0)
            })
            .max()
            .unwrap_or(0);
        let cut = self.held.len() - keep;
        let out = self.held[..cut].to_string();
        self.held.drain(..cut);
        StopCheck::Emit(out)
    }

    /// Text still held back when generation ends for another reason.
    pub fn flush(&mut self) -> String {
        std::mem::take(&mut self.held)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn emit(c: StopCheck) -> String {
        match c {
            StopCheck::Emit(s) => s,
            StopCheck::Stopped { .. } => panic!("unexpected stop"),
        }
    }

    #[test]
    fn stop_split_across_pieces_is_caught_and_never_emitted() {
        let mut m = StopMatcher::new(&["\n\nUser:".to_string()]);
        assert_eq!(emit(m.push("Hello")), "Hello");
        assert_eq!(emit(m.push(" there\n")), " there");
        assert_eq!(emit(m.push("\nUs")), "");
        match m.push("er: hi") {
            StopCheck::Stopped { before, stop } => {
                assert_eq!(before, "");
                assert_eq!(stop, "\n\nUser:");
            }
            _ => panic!("should stop"),
        }
    }

    #[test]
    fn false_alarm_is_released() {
        let mut m = StopMatcher::new(&["END".to_string()]);
        assert_eq!(emit(m.push("the EN")), "the ");
        assert_eq!(emit(m.push("d")), "ENd");
        let mut m = StopMatcher::new(&["END".to_string()]);
        assert_eq!(emit(m.push("EN")), "");
        assert_eq!(emit(m.push("TRY")), "ENTRY");
        assert_eq!(m.flush(), "");
    }

    #[test]
    fn earliest_stop_wins_and_multibyte_is_safe() {
        let mut m = StopMatcher::new(&["é!".to_string(), "b".to_string()]);
        match m.push("aé!b") {
            StopCheck::Stopped { before, stop } => {
                assert_eq!((before.as_str(), stop.as_str()), ("a", "é!"))
            }
            _ => panic!(),
        }
        let mut m = StopMatcher::new(&["éé".to_string()]);
        assert_eq!(emit(m.push("xé")), "x");
        assert_eq!(m.flush(), "é");
    }
}
