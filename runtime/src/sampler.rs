//! Choosing the next token from logits: logit bias, repetition / presence / frequency
//! penalties, greedy, temperature, top-k, top-p, min-p, with a seeded RNG (runs are
//! reproducible); and the log-probabilities OpenAI's `logprobs` report.

/// Sampling settings. `temperature <= 0` is greedy.
#[derive(Clone, Debug)]
pub struct SamplerOptions {
    pub temperature: f32,
    /// Keep the k most likely tokens (0 = all).
    pub top_k: usize,
    /// Keep the smallest set whose probability reaches p (1 = all).
    pub top_p: f32,
    /// Drop tokens less likely than `min_p × p(most likely)` (0 = none).
    pub min_p: f32,
    /// Divide positive logits (multiply negative ones) of recently seen tokens (1 = off).
    pub repeat_penalty: f32,
    /// How many recent tokens the penalties look at.
    pub repeat_last_n: usize,
    /// Subtracted from the logit of each recent token once (OpenAI's `presence_penalty`).
    pub presence_penalty: f32,
    /// Subtracted from the logit of each recent token once per occurrence (OpenAI's
    /// `frequency_penalty`).
    pub frequency_penalty: f32,
    /// Added to a token's logit before everything else (OpenAI's `logit_bias`: -100 bans a
    /// token, +100 all but forces it).
    pub logit_bias: Vec<(u32, f32)>,
    pub seed: u64,
}

impl Default for SamplerOptions {
    fn default() -> Self {
        SamplerOptions {
            temperature: 0.8,
            top_k: 40,
            top_p: 0.95,
            min_p: 0.05,
            repeat_penalty: 1.0,
            repeat_last_n: 64,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            logit_bias: Vec::new(),
            seed: 0x5eed,
        }
    }
}

impl SamplerOptions {
    /// Settings the sampler can use: a finite temperature ≥ 0, top-p in (0, 1], min-p in
    /// [0, 1], a finite repeat penalty > 0, finite penalties and biases; else an error naming
    /// the first that is not.
    pub fn check(&self) -> crate::Result<()> {
        let bad = |m: String| Err(crate::Error::InvalidArgument(m));
        if !(self.temperature.is_finite() && self.temperature >= 0.0) {
            return bad(format!(
                "temperature {} must be finite and >= 0",
                self.temperature
            ));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return bad(format!("top_p {} must be in (0, 1]", self.top_p));
        }
        if !(0.0..=1.0).contains(&self.min_p) {
            return bad(format!("min_p {} must be in [0, 1]", self.min_p));
        }
        if !(self.repeat_penalty.is_finite() && self.repeat_penalty > 0.0) {
            return bad(format!(
                "repeat_penalty {} must be finite and > 0",
                self.repeat_penalty
            ));
        }
        if !(self.presence_penalty.is_finite() && self.frequency_penalty.is_finite()) {
            return bad("presence_penalty and frequency_penalty must be finite".into());
        }
        if let Some((id, b)) = self.logit_bias.iter().find(|(_, b)| !b.is_finite()) {
            return bad(format!("the logit bias of token {id} ({b}) must be finite"));
        }
        Ok(())
    }

    pub fn greedy() -> Self {
        SamplerOptions {
            temperature: 0.0,
            ..Default::default()
        }
    }
}

/// Index of the first maximum of `values` (0 when empty); NaN never wins.
pub fn argmax(values: &[f32]) -> usize {
    values
        .iter()
        .enumerate()
        .fold(
            (0, f32::NEG_INFINITY),
            |b, (i, &v)| if v > b.1 { (i, v) } else { b },
        )
        .0
}

/// SplitMix64: small, fast, and the same sequence on every platform and version.
#[derive(Clone, Debug)]
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn next_f32(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }
}

#[derive(Clone, Debug)]
pub struct Sampler {
    pub options: SamplerOptions,
    rng: Rng,
    recent: std::collections::VecDeque<u32>,
    /// (id, logit or probability), reused between calls.
    candidates: Vec<(u32, f32)>,
}

impl Sampler {
    pub fn new(options: SamplerOptions) -> Sampler {
        let rng = Rng(options.seed);
        Sampler {
            options,
            rng,
            recent: Default::default(),
            candidates: Vec::new(),
        }
    }

    /// Starts the random sequence again from `seed` (the repetition window is kept): another
    /// answer from the same state.
    pub fn reseed(&mut self, seed: u64) {
        self.options.seed = seed;
        self.rng = Rng(seed);
    }

    /// Records a token fed to the model (prompt or generated) for the repetition penalty.
    pub fn observe(&mut self, id: u32) {
        if self.options.repeat_last_n == 0 {
            return;
        }
        if self.recent.len() == self.options.repeat_last_n {
            self.recent.pop_front();
        }
        self.recent.push_back(id);
    }

    /// Picks the next token from `logits` (not modified).
    pub fn sample(&mut self, logits: &[f32]) -> u32 {
        let o = &self.options;
        self.candidates.clear();
        self.candidates
            .extend(logits.iter().enumerate().map(|(i, &l)| (i as u32, l)));
        for &(id, bias) in &o.logit_bias {
            if let Some(c) = self.candidates.get_mut(id as usize) {
                c.1 += bias;
            }
        }
        if o.presence_penalty != 0.0 || o.frequency_penalty != 0.0 {
            // Each recent token: the frequency penalty once per occurrence, the presence
            // penalty once (at its first occurrence in the window).
            for (i, &id) in self.recent.iter().enumerate() {
                let first = !self.recent.iter().take(i).any(|&earlier| earlier == id);
                if let Some(c) = self.candidates.get_mut(id as usize) {
                    c.1 -= o.frequency_penalty + if first { o.presence_penalty } else { 0.0 };
                }
            }
        }
        if o.repeat_penalty != 1.0 {
            for &id in &self.recent {
                if let Some(c) = self.candidates.get_mut(id as usize) {
                    c.1 = if c.1 > 0.0 {
                        c.1 / o.repeat_penalty
                    } else {
                        c.1 * o.repeat_penalty
                    };
                }
            }
        }
        if o.temperature <= 0.0 {
            // First maximum, as argmax does.
            return self
                .candidates
                .iter()
                .fold(
                    (0u32, f32::NEG_INFINITY),
                    |b, c| if c.1 > b.1 { *c } else { b },
                )
                .0;
        }
        let by_logit = |a: &(u32, f32), b: &(u32, f32)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
        if o.top_k > 0 && o.top_k < self.candidates.len() {
            self.candidates
                .select_nth_unstable_by(o.top_k - 1, by_logit);
            self.candidates.truncate(o.top_k);
        }
        self.candidates.sort_unstable_by(by_logit);
        // Softmax at the temperature.
        let max = self.candidates[0].1;
        let mut sum = 0f32;
        for c in &mut self.candidates {
            c.1 = ((c.1 - max) / o.temperature).exp();
            sum += c.1;
        }
        for c in &mut self.candidates {
            c.1 /= sum;
        }
        if o.min_p > 0.0 {
            let floor = o.min_p * self.candidates[0].1;
            let keep = self
                .candidates
                .iter()
                .take_while(|c| c.1 >= floor)
                .count()
                .max(1);
            self.candidates.truncate(keep);
        }
        if o.top_p < 1.0 {
            let mut acc = 0f32;
            let mut keep = self.candidates.len();
            for (i, c) in self.candidates.iter().enumerate() {
                acc += c.1;
                if acc >= o.top_p {
                    keep = i + 1;
                    break;
                }
            }
            self.candidates.truncate(keep);
        }
        let total: f32 = self.candidates.iter().map(|c| c.1).sum();
        let mut r = self.rng.next_f32() * total;
        for c in &self.candidates {
            r -= c.1;
            if r < 0.0 {
                return c.0;
            }
        }
        self.candidates.last().map_or(0, |c| c.0)
    }
}

/// A generated token's log-probability under the model (the log-softmax of the raw logits,
/// before any penalty or filter), with the `top` most likely tokens' (OpenAI's `logprobs`).
#[derive(Clone, Debug, PartialEq)]
pub struct TokenLogprob {
    pub id: u32,
    pub logprob: f32,
    /// The most likely tokens and their log-probabilities, most likely first.
    pub top: Vec<(u32, f32)>,
}

impl TokenLogprob {
    /// `id`'s log-probability in `logits` and the `top` most likely (ties: lower id first).
    pub fn of(logits: &[f32], id: u32, top: usize) -> TokenLogprob {
        // Summed in f64: 10^5 terms in f32 drift by ~1e-4.
        let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let sum: f64 = logits.iter().map(|&l| f64::from(l - max).exp()).sum();
        let log_sum = max + sum.ln() as f32;
        let logprob = logits
            .get(id as usize)
            .map_or(f32::NEG_INFINITY, |&l| l - log_sum);
        let mut best: Vec<(u32, f32)> = Vec::with_capacity(top + 1);
        for (i, &l) in logits.iter().enumerate() {
            if best.len() == top && best.last().is_none_or(|b| l <= b.1) {
                continue;
            }
            let at = best.partition_point(|b| b.1 >= l);
            best.insert(at, (i as u32, l));
            best.truncate(top);
        }
        TokenLogprob {
            id,
            logprob,
            top: best.into_iter().map(|(i, l)| (i, l - log_sum)).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argmax_is_the_first_maximum_and_skips_nan() {
        assert_eq!(argmax(&[1.0, 3.0, 3.0, 2.0]), 1);
        assert_eq!(argmax(&[f32::NAN, -1.0]), 1);
        assert_eq!(argmax(&[]), 0);
    }

    #[test]
    fn greedy_takes_the_first_maximum() {
        let mut s = Sampler::new(SamplerOptions::greedy());
        assert_eq!(s.sample(&[0.1, 3.0, 3.0, -1.0]), 1);
    }

    #[test]
    fn filters_leave_only_allowed_tokens_and_seed_repeats() {
        let logits: Vec<f32> = (0..100).map(|i| (i as f32) / 10.0).collect();
        let opts = SamplerOptions {
            temperature: 1.0,
            top_k: 5,
            top_p: 1.0,
            min_p: 0.0,
            seed: 1,
            ..Default::default()
        };
        let mut a = Sampler::new(opts.clone());
        let mut b = Sampler::new(opts);
        for _ in 0..200 {
            let (x, y) = (a.sample(&logits), b.sample(&logits));
            assert_eq!(x, y, "same seed, same tokens");
            assert!(x >= 95, "top-k 5 allows only 95..99, got {x}");
        }
        let mut m = Sampler::new(SamplerOptions {
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.5,
            ..Default::default()
        });
        for _ in 0..200 {
            // min-p 0.5: p(i)/p(99) = e^{(i-99)/10} >= 0.5 only for i >= 93.
            assert!(m.sample(&logits) >= 93);
        }
        let mut p = Sampler::new(SamplerOptions {
            temperature: 1.0,
            top_k: 0,
            top_p: 0.3,
            min_p: 0.0,
            ..Default::default()
        });
        for _ in 0..200 {
            // The top 3 of e^{i/10} hold 0.095 + 0.086 + 0.078 = 0.26 < 0.3; the 4th reaches it.
            assert!(p.sample(&logits) >= 96);
        }
    }

    #[test]
    fn logit_bias_forces_and_bans_tokens() {
        let logits = [0.0, 5.0, 1.0, 2.0];
        let mut s = Sampler::new(SamplerOptions {
            logit_bias: vec![(1, -100.0)],
            ..SamplerOptions::greedy()
        });
        assert_eq!(s.sample(&logits), 3, "token 1 banned");
        let mut s = Sampler::new(SamplerOptions {
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            logit_bias: vec![(0, 100.0)],
            ..Default::default()
        });
        for _ in 0..100 {
            assert_eq!(s.sample(&logits), 0, "token 0 forced");
        }
    }

    #[test]
    fn presence_and_frequency_penalties_count_as_openai_says() {
        // Token 1 seen twice, token 2 once: logits 3 - 2*0.5 - 1 = 1 and 2.5 - 0.5 - 1 = 1;
        // token 0 (2.0) now leads.
        let mut s = Sampler::new(SamplerOptions {
            presence_penalty: 1.0,
            frequency_penalty: 0.5,
            ..SamplerOptions::greedy()
        });
        for id in [1, 2, 1] {
            s.observe(id);
        }
        assert_eq!(s.sample(&[2.0, 3.0, 2.5]), 0);
        assert_eq!(
            s.sample(&[0.9, 3.0, 2.5]),
            1,
            "ties go to the lower id: 1 and 1"
        );
    }

    #[test]
    fn logprobs_are_the_log_softmax_and_the_top_sorted() {
        let logits = [1.0f32, 3.0, 2.0, 3.0, -1.0];
        let lp = TokenLogprob::of(&logits, 2, 3);
        let sum: f32 = logits.iter().map(|l| l.exp()).sum();
        assert!(
            (lp.logprob - (2f32.exp() / sum).ln()).abs() < 1e-6,
            "{lp:?}"
        );
        let ids: Vec<u32> = lp.top.iter().map(|t| t.0).collect();
        assert_eq!(ids, [1, 3, 2]);
        assert!((lp.top[0].1 - (3f32.exp() / sum).ln()).abs() < 1e-6);
        assert!(TokenLogprob::of(&logits, 0, 0).top.is_empty());
    }

    #[test]
    fn repetition_penalty_demotes_seen_tokens() {
        let mut s = Sampler::new(SamplerOptions {
            repeat_penalty: 4.0,
            ..SamplerOptions::greedy()
        });
        s.observe(1);
        assert_eq!(s.sample(&[0.0, 2.0, 1.0]), 2);
    }
}
