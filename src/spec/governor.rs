//! Choosing k, the number of guesses per round, from live measurements: the
//! acceptance rate α (discounted counts per guessed token, by depth), the
//! draft's cost per guess, and the target's cost of one forward pass by the
//! number of rows it scores. A round with k guesses yields on average
//! 1 + α₁ + α₁α₂ + … + α₁…α_k tokens (α_i: the chance that guess i is kept
//! given that those before it were, which grows with depth where guesses
//! come right in runs) for k·draft + verify(k+1) seconds; the governor
//! picks the k (0 = plain decoding) with the most tokens per second.
//! α is kept per class of guess (the proposer's outlook: for n-gram lookup,
//! how much context the match shares), since a guess that continues a long
//! copied passage is kept far more often than one found after two common
//! tokens; each class is tried once before its own rate decides.
//! When plain decoding wins it still tries k = 2 now and then, so that
//! speculation comes back where the text turns predictable; when
//! speculation wins it still takes a plain step now and then, so that the
//! cost it is weighed against stays measured. Acceptance starts from a
//! prior worth two guesses, so one unlucky first round cannot turn
//! speculation off by itself.

use super::OUTLOOKS;

/// `fixed_k`: always use this k (`--k 4`); otherwise choose up to `k_max`.
#[derive(Debug, Clone)]
pub struct GovernorConfig {
    pub k_max: usize,
    pub fixed_k: Option<usize>,
}

impl Default for GovernorConfig {
    fn default() -> Self {
        Self {
            k_max: 8,
            fixed_k: None,
        }
    }
}

/// The acceptance rate a proposer is assumed capable of before it is tried.
const OPTIMISTIC: f64 = 0.9;
/// With speculation off, one probing round in this many; doubled after each
/// probe that finds it still losing (up to `PROBE_OFF_MAX`), so a useless
/// proposer costs ever less.
const PROBE_OFF: usize = 32;
const PROBE_OFF_MAX: usize = 1024;
/// With speculation on, try a neighbouring k one round in this many.
const PROBE_ON: usize = 16;
/// Plain decoding time per second of probing while speculation is off:
/// probes cost at most 1%, the draft's catch-up included. On a GPU a probe
/// whose draft reads the 100-odd tokens it missed costs a 7B target ~8
/// plain steps, and the bar for a useless draft is 0.97× plain decoding,
/// its trial included.
const PROBE_BUDGET: f64 = 100.0;
/// Catch-ups shorter than this say little about the cost per token.
const CATCH_UP_MIN_TOKENS: usize = 8;
/// With speculation on, a plain step one round in this many (in this few
/// until `SETTLED` plain steps are measured), so that the cost speculation
/// is weighed against stays current: otherwise it is measured only while
/// speculation is off, and one slow early step (77 ms against 50 ms, right
/// after the prompt) stood for it through hundreds of rounds.
const PLAIN_EVERY: usize = 32;
const PLAIN_EVERY_EARLY: usize = 8;
/// Where in those periods the plain step falls: off the rounds that try a
/// neighbouring k (multiples of `PROBE_ON`).
const PLAIN_PHASE: usize = 5;
/// Rounds in which turning speculation on must repay the proposer's
/// catching up ([`Governor::repays_catching_up`]).
const REPAY_ROUNDS: usize = 32;
/// Plain steps measured before the plain steps among speculative rounds
/// become rarer.
const SETTLED: usize = 4;

#[derive(Debug, Clone)]
pub struct Governor {
    pub cfg: GovernorConfig,
    /// Acceptance per guess, once a round has guessed: over all guesses,
    /// and per outlook class.
    alpha: Option<Acceptance>,
    alpha_by_outlook: [Option<Acceptance>; OUTLOOKS],
    /// The outlook of the round being chosen and observed.
    outlook: usize,
    /// Seconds per guess (measured: a round's draft time over its guesses),
    /// and the prior in plain steps.
    draft_cost: Option<Cost>,
    /// The same per outlook class: a proposer may guess by different means
    /// per class (a draft model that follows a long copied passage by
    /// lookup, at no cost, and guesses elsewhere by running).
    draft_cost_by_outlook: [Option<Cost>; OUTLOOKS],
    /// A round's draft seconds per class, by its number of guesses (index
    /// = k): the first pass costs more than the others (it also reads what
    /// the last round settled), so k guesses do not cost k times one. On
    /// two CPU cores Qwen2.5-Coder-0.5B took 13.6 ms for a round of one
    /// guess and 34.5 for three; priced at k times the one-guess cost,
    /// rounds of three looked 5% dearer than they were and lost to k = 1,
    /// which ran 1.26× plain decoding where k = 3 ran 1.33×.
    draft_by_k: [Vec<Option<Cost>>; OUTLOOKS],
    draft_prior: f64,
    /// Extra seconds a round costs over plain steps (the draft's passes, the
    /// longer verification), and the seconds probes may still spend: a
    /// hundredth of each plain step's time, less what probes cost.
    probe_cost: Option<Cost>,
    probe_credit: f64,
    /// The round being observed is a probe, charged to the credit.
    probing: bool,
    /// Seconds per token a proposer spends catching up before it guesses,
    /// and the tokens it would read now ([`Governor::note_behind`]).
    catch_up: Option<Cost>,
    behind: usize,
    /// Seconds per target forward pass, by rows scored (index = rows).
    verify: Vec<Option<Cost>>,
    round: usize,
    /// The last choice made by the rates was to speculate (a probe is
    /// not; a periodic plain step keeps it).
    on: bool,
    /// Rounds between probes while speculation is off, and the next probe.
    probe_every: usize,
    next_probe: usize,
    /// How often each k was chosen.
    pub histogram: Vec<usize>,
    pub last_k: usize,
}

/// Seconds a pass or guess takes: a running estimate that follows a
/// faster sample halfway and a slower one a tenth of the way, so it sits
/// near the low end of what was measured. Noise only ever adds time: a
/// neighbour's burst on a shared host, and on a GPU the first passes of
/// each request, which record their CUDA graphs (3.5–8 ms against 2.0 for
/// a 7B step). A plain moving average held those and put plain decoding at
/// half its speed, so that a draft that guessed nothing kept running.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Cost {
    secs: f64,
    samples: usize,
}

/// How far a [`Cost`] follows a faster and a slower sample.
const COST_DOWN: f64 = 0.5;
const COST_UP: f64 = 0.1;

impl Cost {
    fn after(old: Option<Self>, secs: f64) -> Self {
        let Some(old) = old else {
            return Self { secs, samples: 1 };
        };
        let weight = if secs < old.secs { COST_DOWN } else { COST_UP };
        Self {
            secs: old.secs + weight * (secs - old.secs),
            samples: old.samples + 1,
        }
    }
}

/// The chance that a guess is kept given that those before it were, by the
/// guess's depth in its round (the first, the second, the third, and one
/// rate for the fourth on): kept over put to the test (the kept ones, and
/// the first rejected one where there was one), as discounted sums of both
/// counts. The share of guesses kept would understate it: the guesses after
/// a rejection are never tested, so a round of two guesses at α = 0.9 keeps
/// only 85.5% of them. By depth, because acceptance comes in runs: on code
/// with Qwen2.5-Coder-0.5B drafting for the 1.5B, rounds of three kept all
/// three or none far more often than one rate allows (3.3 tokens a round
/// where one rate of 0.79 promises 2.9), and one rate chose k = 1 or 2 where
/// 3 won (1.24× against 1.31×).
#[derive(Debug, Clone, Copy, PartialEq)]
struct Acceptance {
    /// Per depth; `None` until a guess of that depth was tested, when the
    /// depth above stands in for it (a guess after kept ones is kept at
    /// least as often, as far as anything has shown).
    by_depth: [Option<Rate>; DEPTHS],
    /// Over all depths (telemetry).
    all: Rate,
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct Rate {
    kept: f64,
    tested: f64,
    /// Guesses kept lately, discounted as `kept` is but without the prior
    /// (`tested` says how much evidence the rate rests on).
    kept_lately: f64,
}

/// Depths with a rate of their own; deeper guesses share the last.
const DEPTHS: usize = 4;

/// How much of its weight a count keeps per new test (1 − this): the
/// acceptance counts are discounted sums, ten tests' worth in the long run,
/// slower than the costs' averages since a round tests only one to k
/// guesses (at 0.2, α on prose wandered ±0.15 about 0.7, across the
/// break-even of k = 2 at about 0.63). Sums, not averages: a new test
/// weighs one against the prior's two, so a draft that guesses nothing
/// reads 0.48 after one failure and 0.35 after two, where a moving average
/// of a tenth read 0.71 and 0.67 and kept an H100's random draft
/// speculating for a dozen rounds (0.95 of plain speed over 64 tokens).
const ACCEPTANCE_DISCOUNT: f64 = 0.1;

/// Where a class's acceptance starts: two guesses tested, 0.75 kept. The
/// first round used to decide alone: one guess of two kept on prose read as
/// α = 0.5 and held speculation off where k = 2 won 1.11×. Guesses that
/// always fail still turn it off after four rounds of two.
const PRIOR: Rate = Rate {
    kept: 1.5,
    tested: 2.0,
    kept_lately: 0.0,
};

/// How far above its rate a class's first guess may still be kept, in
/// standard errors (one-sided 90%), while speculation is on: it is turned
/// off when even that loses, not when the rate does. Only for a class that
/// has kept at least `STAY_KEPT` of its recent guesses: a useless draft
/// goes off as soon as its rate says so.
const STAY_Z: f64 = 1.28;
const STAY_KEPT: f64 = 2.0;

impl Rate {
    fn mix(self, kept: f64, tested: f64) -> Rate {
        let mix = |o: f64, n: f64| (1.0 - ACCEPTANCE_DISCOUNT) * o + n;
        Rate {
            kept: mix(self.kept, kept),
            tested: mix(self.tested, tested),
            kept_lately: mix(self.kept_lately, kept),
        }
    }

    /// The rate plus `z` standard errors of a share of `tested` trials.
    fn upper(&self, z: f64) -> f64 {
        let r = self.rate().clamp(0.0, 1.0);
        (r + z * (r * (1.0 - r) / self.tested.max(1.0)).sqrt()).min(1.0)
    }

    fn rate(&self) -> f64 {
        self.kept / self.tested.max(f64::MIN_POSITIVE)
    }
}

impl Acceptance {
    fn after(old: Option<Self>, drafted: usize, accepted: usize) -> Self {
        let tested = accepted + usize::from(accepted < drafted);
        let mut new = old.unwrap_or(Acceptance {
            by_depth: std::array::from_fn(|d| (d == 0).then_some(PRIOR)),
            all: PRIOR,
        });
        new.all = new.all.mix(accepted as f64, tested as f64);
        for i in 0..tested {
            let d = i.min(DEPTHS - 1);
            new.by_depth[d] = Some(new.depth(d).mix(f64::from(u8::from(i < accepted)), 1.0));
        }
        new
    }

    /// What depth `d` starts from before it is tested: the nearest tested
    /// depth above it.
    fn stand_in(&self, d: usize) -> Rate {
        self.by_depth[..d]
            .iter()
            .rev()
            .find_map(|r| *r)
            .unwrap_or(PRIOR)
    }

    /// Depth `d`'s counts, or its stand-in's before it is tested.
    fn depth(&self, d: usize) -> Rate {
        self.by_depth[d].unwrap_or_else(|| self.stand_in(d))
    }

    /// The rate of each depth.
    fn by_depth(&self) -> [f64; DEPTHS] {
        std::array::from_fn(|d| self.depth(d).rate())
    }

    /// Each depth's rate `z` standard errors up.
    fn upper_by_depth(&self, z: f64) -> [f64; DEPTHS] {
        std::array::from_fn(|d| self.depth(d).upper(z))
    }

    /// Recent guesses kept at the first depth (a discounted count).
    fn recently_kept(&self) -> f64 {
        self.by_depth[0].map_or(0.0, |r| r.kept_lately)
    }

    fn rate(&self) -> f64 {
        self.all.rate()
    }
}

/// A table of costs by count (rows scored, guesses), as (count, seconds)
/// for the counts measured, in order.
fn measured(table: &[Option<Cost>]) -> impl DoubleEndedIterator<Item = Point> + '_ {
    table
        .iter()
        .enumerate()
        .filter_map(|(n, c)| c.map(|c| (n, c.secs)))
}

/// The first two items of `it`, if it has two.
fn first_two<T>(mut it: impl Iterator<Item = T>) -> Option<(T, T)> {
    Some((it.next()?, it.next()?))
}

/// A measured count and its seconds.
type Point = (usize, f64);

/// The nearest measured counts below and above `n`.
fn neighbours(table: &[Option<Cost>], n: usize) -> (Option<Point>, Option<Point>) {
    (
        measured(table).rev().find(|&(m, _)| m < n),
        measured(table).find(|&(m, _)| m > n),
    )
}

impl Governor {
    pub fn new(cfg: GovernorConfig) -> Self {
        let k_max = cfg.fixed_k.unwrap_or(cfg.k_max);
        Self {
            alpha: None,
            alpha_by_outlook: [None; OUTLOOKS],
            outlook: 0,
            draft_cost: None,
            draft_cost_by_outlook: [None; OUTLOOKS],
            draft_by_k: std::array::from_fn(|_| vec![None; k_max + 1]),
            draft_prior: 0.0,
            probe_cost: None,
            probe_credit: 0.0,
            probing: false,
            catch_up: None,
            behind: 0,
            verify: vec![None; k_max + 2],
            round: 0,
            on: false,
            probe_every: PROBE_OFF,
            next_probe: PROBE_OFF,
            histogram: vec![0; k_max + 1],
            last_k: 0,
            cfg: GovernorConfig { k_max, ..cfg },
        }
    }

    /// A governor for the next request that starts from what this one has
    /// measured (costs, acceptance) instead of from nothing: short requests
    /// would otherwise spend much of their length exploring.
    pub fn successor(&self) -> Governor {
        let mut g = Governor::new(self.cfg.clone());
        g.alpha = self.alpha;
        g.alpha_by_outlook = self.alpha_by_outlook;
        g.draft_cost = self.draft_cost;
        g.draft_cost_by_outlook = self.draft_cost_by_outlook;
        g.draft_by_k = self.draft_by_k.clone();
        g.draft_prior = self.draft_prior;
        g.probe_cost = self.probe_cost;
        g.catch_up = self.catch_up;
        g.probe_credit = self.probe_credit;
        g.verify = self.verify.clone();
        g
    }

    /// The proposer's expected cost per pass in plain target steps, used
    /// until its cost is measured ([`super::Proposer::cost_hint`]).
    pub fn set_draft_prior(&mut self, steps: f64) {
        self.draft_prior = steps;
    }

    /// The measured acceptance rate over all guesses; an even chance before
    /// any guess.
    pub fn acceptance(&self) -> f64 {
        self.alpha.map_or(0.5, |a| a.rate())
    }

    /// The acceptance rates by depth expected of guesses of class
    /// `outlook`: the class's (all guesses' before the class has been
    /// tried; an even chance before any guess).
    fn expected_acceptance(&self, outlook: usize) -> [f64; DEPTHS] {
        match self.alpha_by_outlook[outlook].or(self.alpha) {
            Some(a) => a.by_depth(),
            None => [0.5; DEPTHS],
        }
    }

    /// Draft cost per guess over the cost of a plain target step, once both
    /// are known: of the guesses of outlook 0 (a draft model's own) where
    /// there are any.
    pub fn cost_ratio(&self) -> Option<f64> {
        let by_model = self.draft_cost_by_outlook[0];
        Some(by_model.or(self.draft_cost)?.secs / self.verify_cost(1)?)
    }

    /// Measured seconds per target pass, by rows scored (telemetry).
    pub fn verify_costs(&self) -> Vec<Option<f64>> {
        self.verify.iter().map(|c| c.map(|c| c.secs)).collect()
    }

    /// The k for the next round, at most `limit` (the tokens still wanted),
    /// for guesses of class `outlook` ([`super::Proposer::outlook`]; `None`:
    /// the proposer has nothing to guess, so the round is a plain step).
    pub fn choose(&mut self, limit: usize, outlook: Option<usize>) -> usize {
        self.round += 1;
        self.outlook = outlook.unwrap_or(0).min(OUTLOOKS - 1);
        let k = match (outlook, self.cfg.fixed_k) {
            (None, _) => 0,
            (Some(_), Some(k)) => k,
            (Some(_), None) => self.pick(),
        }
        .min(limit)
        .min(self.cfg.k_max);
        self.histogram[k] += 1;
        self.last_k = k;
        k
    }

    fn pick(&mut self) -> usize {
        // First measure a plain step, then a round with two guesses.
        if self.verify_cost(1).is_none() {
            return 0;
        }
        // Explore only if some k would win at a high acceptance (the 90% the
        // studies saw for code with a same-family draft): a draft too slow
        // for that is never tried, and costs nothing.
        let optimistic = |k| self.rate_at(k, [OPTIMISTIC; DEPTHS], self.outlook);
        let best_case = (1..=self.cfg.k_max).any(|k| optimistic(k) > optimistic(0));
        if !best_case {
            return 0;
        }
        // Each class of guess is tried once before its rate decides: another
        // class's failures say little about it.
        if self.alpha_by_outlook[self.outlook].is_none() {
            return 2.min(self.cfg.k_max);
        }
        let best = (0..=self.cfg.k_max)
            .max_by(|&a, &b| self.rate(a).total_cmp(&self.rate(b)))
            .unwrap_or(0);
        if best == 0 && self.on {
            if let Some(k) = self.still_worth_it() {
                return k;
            }
        }
        // From off, the draft first reads what it missed: only a gain that
        // repays that soon turns speculation on; a smaller one waits for a
        // probe, paid from the credit.
        let best = if best > 0 && !self.on && !self.repays_catching_up(best) {
            0
        } else {
            best
        };
        self.on = best > 0;
        if best > 0 {
            self.probe_every = PROBE_OFF;
        }
        if best == 0 {
            if self.round >= self.next_probe && self.probe_credit >= self.probe_estimate() {
                self.probing = true;
                self.next_probe = self.round + self.probe_every;
                self.probe_every = (self.probe_every * 2).min(PROBE_OFF_MAX);
                2.min(self.cfg.k_max)
            } else {
                0
            }
        } else if self.round % self.plain_every() == PLAIN_PHASE {
            0
        } else if self.round.is_multiple_of(PROBE_ON) {
            if (self.round / PROBE_ON).is_multiple_of(2) {
                (best + 1).min(self.cfg.k_max)
            } else {
                best - 1
            }
        } else {
            best
        }
    }

    /// While speculation is on and the rates turn against it: the k (one
    /// or two) that still wins if the first guess is kept at its rate's
    /// upper bound, for a class that has kept guesses lately. A few failed
    /// rounds in a row move the rate a long way (0.1 a round) but say
    /// little; turning off is dear where catching up later costs more than
    /// probes may spend.
    fn still_worth_it(&self) -> Option<usize> {
        let a = self.alpha_by_outlook[self.outlook]?;
        if a.recently_kept() < STAY_KEPT {
            return None;
        }
        let upper = a.upper_by_depth(STAY_Z);
        let plain = self.rate(0);
        (1..=self.cfg.k_max.min(2))
            .map(|k| (k, self.rate_at(k, upper, self.outlook)))
            .filter(|&(_, r)| r > plain)
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .map(|(k, _)| k)
    }

    /// Whether k guesses a round gain, within `REPAY_ROUNDS` rounds, what
    /// the proposer's catching up would cost now. On an H100 a random
    /// draft's k = 1 once read 0.01% faster than plain steps, after a small
    /// change in the measured step; turned on, the 0.5B read the 45 tokens
    /// it had missed (17 ms, eight steps of the 7B) and lost a request's
    /// worth of that row's gain.
    fn repays_catching_up(&self, k: usize) -> bool {
        let Some(plain) = self.verify_cost(1) else {
            return true;
        };
        let gain = self.rate(k) / self.rate(0) - 1.0;
        gain * plain * REPAY_ROUNDS as f64 >= self.catch_up_estimate()
    }

    /// Rounds between plain steps while speculating.
    fn plain_every(&self) -> usize {
        match self.verify.get(1).copied().flatten() {
            Some(c) if c.samples >= SETTLED => PLAIN_EVERY,
            _ => PLAIN_EVERY_EARLY,
        }
    }

    /// Whether plain steps will likely follow one another for a while: k
    /// is fixed at 0, or speculation is off after this class of guess was
    /// tried (probes then come rarely, paid from a credit). Ask after
    /// [`Governor::choose`].
    pub fn settled_off(&self) -> bool {
        match self.cfg.fixed_k {
            Some(k) => k == 0,
            None => !self.on && self.alpha_by_outlook[self.outlook].is_some(),
        }
    }

    /// Whether a draft's own guesses (outlook 0) are expected to pay: true
    /// before they have been measured, so that a new draft is tried. A draft
    /// reads the prompt ahead of time only then; one that is off would pay
    /// for reading it and never use it.
    pub fn expects_to_speculate(&self) -> bool {
        if let Some(k) = self.cfg.fixed_k {
            return k > 0;
        }
        if self.verify_cost(1).is_none() || self.alpha_by_outlook[0].is_none() {
            return true;
        }
        let own = |k| self.rate_of(k, 0);
        (1..=self.cfg.k_max).any(|k| own(k) > own(0))
    }

    /// Expected tokens per second with k guesses in the coming round.
    pub fn rate(&self, k: usize) -> f64 {
        self.rate_of(k, self.outlook)
    }

    /// The same for guesses of class `outlook`.
    fn rate_of(&self, k: usize, outlook: usize) -> f64 {
        self.rate_at(k, self.expected_acceptance(outlook), outlook)
    }

    /// Expected tokens per second with k guesses that are kept at the
    /// rates `alpha` by depth.
    fn rate_at(&self, k: usize, alpha: [f64; DEPTHS], outlook: usize) -> f64 {
        let Some(verify) = self.verify_cost(k + 1) else {
            return 0.0;
        };
        // The pending token, then each guess while all before it held.
        let (mut tokens, mut reach) = (1.0, 1.0);
        for i in 0..k {
            reach *= alpha[i.min(DEPTHS - 1)].clamp(0.0, 1.0);
            tokens += reach;
        }
        tokens / (self.draft_secs(k, outlook) + verify)
    }

    /// A round's draft seconds with k guesses of class `outlook`: measured
    /// for this k, else linear between or beyond the class's measured k
    /// (two of them give the first pass's extra and the cost of each
    /// further one), else k times a guess's cost (the class's, all
    /// guesses', or the prior).
    fn draft_secs(&self, k: usize, outlook: usize) -> f64 {
        if k == 0 {
            return 0.0;
        }
        let table = &self.draft_by_k[outlook];
        if let Some(Some(c)) = table.get(k) {
            return c.secs;
        }
        let line = |(n0, c0): Point, (n1, c1): Point| {
            let per_guess = ((c1 - c0) / (n1 as f64 - n0 as f64)).max(0.0);
            c0 + per_guess * (k as f64 - n0 as f64)
        };
        let fitted = match neighbours(table, k) {
            (Some(b), Some(a)) => Some(line(b, a)),
            // Beyond the measured k: the line through the two nearest.
            (Some(_), None) => {
                first_two(measured(table).rev()).map(|(last, before)| line(before, last))
            }
            (None, Some(_)) => {
                first_two(measured(table)).map(|(first, second)| line(first, second))
            }
            (None, None) => None,
        };
        if let Some(secs) = fitted {
            return secs.max(0.0);
        }
        let prior = || self.draft_prior * self.verify_cost(1).unwrap_or(0.0);
        let per_guess = match measured(table).next() {
            Some((n, c)) => Some(c / n as f64),
            None => self.draft_cost.map(|c| c.secs),
        };
        k as f64 * per_guess.unwrap_or_else(prior)
    }

    /// Measured or estimated cost of a forward pass over `rows` rows:
    /// measured where known, linear between measured neighbours, and beyond
    /// them half a step per extra row (pessimistic: a guess must earn its
    /// place before the measurements say it is cheaper).
    fn verify_cost(&self, rows: usize) -> Option<f64> {
        if let Some(Some(c)) = self.verify.get(rows) {
            return Some(c.secs);
        }
        match neighbours(&self.verify, rows) {
            (Some((n0, c0)), Some((n1, c1))) => {
                Some(c0 + (c1 - c0) * (rows - n0) as f64 / (n1 - n0) as f64)
            }
            (Some((n0, c0)), None) => Some(c0 * (1.0 + rows as f64) / (1.0 + n0 as f64)),
            (None, Some((n1, c1))) => Some(c1 * (1.0 + rows as f64) / (1.0 + n1 as f64)),
            (None, None) => None,
        }
    }

    /// The tokens the proposer would read before guessing now (a draft
    /// behind the text after plain steps): what a probe would cost.
    pub fn note_behind(&mut self, tokens: usize) {
        self.behind = tokens;
    }

    /// A proposer read `tokens` tokens in `secs` catching up before a guess.
    pub fn observe_catch_up(&mut self, tokens: usize, secs: f64) {
        // A few tokens' time is mostly fixed overhead, not a rate.
        if tokens >= CATCH_UP_MIN_TOKENS {
            self.catch_up = Some(Cost::after(self.catch_up, secs / tokens as f64));
        }
        if self.probing {
            self.probe_credit -= secs;
        }
    }

    /// Seconds a probe would cost now over plain steps: the round, and the
    /// proposer catching up first. Before a catch-up is measured, a token
    /// read in a batch is taken to cost a quarter of a guess (a draft's
    /// prefill against its decode: 0.24 on the H100 for the 0.5B, ~0.25 on
    /// two CPU cores).
    fn probe_estimate(&self) -> f64 {
        self.probe_cost.map_or(0.0, |c| c.secs) + self.catch_up_estimate()
    }

    /// Seconds the proposer would spend now reading the tokens it is behind.
    fn catch_up_estimate(&self) -> f64 {
        let per_token = match (self.catch_up, self.draft_cost) {
            (Some(c), _) => c.secs,
            (None, Some(d)) => 0.25 * d.secs,
            (None, None) => 0.25 * self.draft_prior * self.verify_cost(1).unwrap_or(0.0),
        };
        per_token * self.behind as f64
    }

    /// Record a round: `drafted` guesses (0 for a plain step), `accepted` of
    /// them kept, the draft's time (without catching up: see
    /// [`Governor::observe_catch_up`]) and the target's forward pass: rows
    /// scored and seconds, or `None` where the pass's time says nothing
    /// about this sequence (a batched step that also read other requests'
    /// prompts).
    pub fn observe(
        &mut self,
        drafted: usize,
        accepted: usize,
        draft_secs: f64,
        pass: Option<(usize, f64)>,
    ) {
        let measured = pass.map(|(rows, secs)| {
            if rows < self.verify.len() {
                self.verify[rows] = Some(Cost::after(self.verify[rows], secs));
            }
            secs
        });
        let verify_secs = measured.or_else(|| self.verify_cost(drafted + 1));
        if let Some(v) = verify_secs {
            if drafted == 0 {
                self.probe_credit += v / PROBE_BUDGET;
            } else if let Some(plain) = self.verify_cost(1) {
                // The round's own cost; catching up is priced per token
                // ([`Governor::observe_catch_up`]).
                let extra = (draft_secs + v - plain * (accepted + 1) as f64).max(0.0);
                self.probe_cost = Some(Cost::after(self.probe_cost, extra));
                if self.probing {
                    self.probe_credit -= extra;
                }
            }
        }
        self.probing = false;
        if drafted > 0 {
            self.alpha = Some(Acceptance::after(self.alpha, drafted, accepted));
            let by_outlook = &mut self.alpha_by_outlook[self.outlook];
            *by_outlook = Some(Acceptance::after(*by_outlook, drafted, accepted));
            let per_guess = draft_secs / drafted as f64;
            self.draft_cost = Some(Cost::after(self.draft_cost, per_guess));
            let by_outlook = &mut self.draft_cost_by_outlook[self.outlook];
            *by_outlook = Some(Cost::after(*by_outlook, per_guess));
            if let Some(c) = self.draft_by_k[self.outlook].get_mut(drafted) {
                *c = Some(Cost::after(*c, draft_secs));
            }
        }
    }

    /// The k actually used when it differs from the one chosen (a batched
    /// step had no room for all the guesses).
    pub fn settle(&mut self, used: usize) {
        if used != self.last_k {
            self.histogram[self.last_k] -= 1;
            self.histogram[used] += 1;
            self.last_k = used;
        }
    }
}

#[cfg(test)]
mod tests;
