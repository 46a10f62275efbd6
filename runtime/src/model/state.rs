//! One sequence's state: the recurrent state of every layer and the rolling window of the
//! last `W` RoPE'd keys and values, both of fixed size. Saved as versioned, checksummed bytes
//! bound to the model they came from.
//!
//! Letters: L layers, Hkv KV heads, d head dim, M GSA slots, W window.

use crate::config::{LigerConfig, Variant};
use crate::error::{Error, Result};
use crate::model::fnv1a;

const MAGIC: [u8; 4] = *b"LGST";
const VERSION: u32 = 1;

#[derive(Clone, Debug, PartialEq)]
pub struct SequenceState {
    /// Per layer, per KV head: S [d, d] (GLA/HGRN2), or K [d, M] then V [M, d] (GSA).
    pub(crate) recurrent: Vec<f32>,
    /// Per layer: keys [W, Hkv·d] after RoPE; slot of position p is `p % W`.
    pub(crate) window_keys: Vec<f32>,
    /// Per layer: values [W, Hkv·d].
    pub(crate) window_values: Vec<f32>,
    /// The window holds positions `pos − window_len .. pos`.
    pub(crate) window_len: usize,
    /// Tokens fed so far (the position of the next token).
    pub(crate) pos: usize,
    /// [V] logits after the last token fed (zeros before any), so a restored state can sample.
    pub(crate) logits: Vec<f32>,
}

impl SequenceState {
    pub fn new(c: &LigerConfig) -> SequenceState {
        let window = Self::window_values_len(c);
        SequenceState {
            recurrent: vec![0.0; Self::recurrent_len(c)],
            window_keys: vec![0.0; window],
            window_values: vec![0.0; window],
            window_len: 0,
            pos: 0,
            logits: vec![0.0; c.vocab_size],
        }
    }

    /// f32 values of the window's keys (or values), all layers.
    fn window_values_len(c: &LigerConfig) -> usize {
        c.n_layers * c.window as usize * c.n_kv_heads * c.head_dim
    }

    pub(crate) fn recurrent_len(c: &LigerConfig) -> usize {
        c.n_layers * c.n_kv_heads * Self::per_head(c)
    }

    /// f32 values of one KV head's recurrent state.
    pub(crate) fn per_head(c: &LigerConfig) -> usize {
        match c.variant {
            Variant::Gla | Variant::Hgrn2 => c.head_dim * c.head_dim,
            Variant::Gsa => 2 * c.head_dim * c.gsa_slots,
        }
    }

    pub fn position(&self) -> usize {
        self.pos
    }

    pub fn reset(&mut self) {
        self.recurrent.fill(0.0);
        self.window_keys.fill(0.0);
        self.window_values.fill(0.0);
        self.window_len = 0;
        self.pos = 0;
        self.logits.fill(0.0);
    }

    /// Layer `l`'s (recurrent state, window keys, window values) for config `c`.
    pub(crate) fn layer(&self, c: &LigerConfig, l: usize) -> (&[f32], &[f32], &[f32]) {
        let (r, w) = Self::per_layer(c);
        (
            &self.recurrent[l * r..(l + 1) * r],
            &self.window_keys[l * w..(l + 1) * w],
            &self.window_values[l * w..(l + 1) * w],
        )
    }

    pub(crate) fn layer_mut(
        &mut self,
        c: &LigerConfig,
        l: usize,
    ) -> (&mut [f32], &mut [f32], &mut [f32]) {
        let (r, w) = Self::per_layer(c);
        (
            &mut self.recurrent[l * r..(l + 1) * r],
            &mut self.window_keys[l * w..(l + 1) * w],
            &mut self.window_values[l * w..(l + 1) * w],
        )
    }

    /// f32 values per layer of (the recurrent state, the window's keys).
    fn per_layer(c: &LigerConfig) -> (usize, usize) {
        (
            c.n_kv_heads * Self::per_head(c),
            c.window as usize * c.n_kv_heads * c.head_dim,
        )
    }

    /// Sets the position, window fill and last logits (a GPU sequence's, whose logits are
    /// empty before any token).
    pub(crate) fn set_position(&mut self, pos: usize, window_len: usize, logits: &[f32]) {
        (self.pos, self.window_len) = (pos, window_len);
        if logits.len() == self.logits.len() {
            self.logits.copy_from_slice(logits);
        }
    }

    /// (position, window fill, logits) for a GPU sequence of config `c`, whose kernels take
    /// 32-bit positions: a state of another shape or a position ≥ 2^31 is refused. The logits
    /// are empty at position 0.
    pub(crate) fn position_for_gpu(&self, c: &LigerConfig) -> Result<(usize, usize, Vec<f32>)> {
        let window = Self::window_values_len(c);
        if self.recurrent.len() != Self::recurrent_len(c)
            || self.window_keys.len() != window
            || self.window_values.len() != window
            || self.logits.len() != c.vocab_size
        {
            return Err(Error::InvalidArgument(
                "state: its shape is not this model's".into(),
            ));
        }
        if self.pos >= 1 << 31 {
            return Err(Error::Unsupported(format!(
                "state: position {} is beyond the GPU backends' 2^31",
                self.pos
            )));
        }
        let logits = if self.pos == 0 {
            Vec::new()
        } else {
            self.logits.clone()
        };
        Ok((self.pos, self.window_len, logits))
    }

    /// Size of [`SequenceState::to_bytes`]'s output for a model of config `c`.
    pub fn byte_len_for(c: &LigerConfig) -> usize {
        HEADER_LEN
            + 4 * (Self::recurrent_len(c) + 2 * Self::window_values_len(c) + c.vocab_size)
            + 8
    }

    /// Size of [`SequenceState::to_bytes`]'s output: fixed for a model.
    pub fn byte_len(&self) -> usize {
        HEADER_LEN
            + 4 * (self.recurrent.len()
                + self.window_keys.len()
                + self.window_values.len()
                + self.logits.len())
            + 8
    }

    /// `LGST` | version u32 | model fingerprint u64 | mode u8 + 7 reserved | pos u64 |
    /// window_len u64 | recurrent, window keys, window values, logits (f32 LE) | FNV-1a u64 of all
    /// before.
    pub fn to_bytes(&self, fingerprint: u64, mode: u8) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.byte_len());
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&VERSION.to_le_bytes());
        out.extend_from_slice(&fingerprint.to_le_bytes());
        out.extend_from_slice(&[mode, 0, 0, 0, 0, 0, 0, 0]);
        out.extend_from_slice(&(self.pos as u64).to_le_bytes());
        out.extend_from_slice(&(self.window_len as u64).to_le_bytes());
        for part in [
            &self.recurrent,
            &self.window_keys,
            &self.window_values,
            &self.logits,
        ] {
            for v in part.iter() {
                out.extend_from_slice(&v.to_le_bytes());
            }
        }
        let sum = fnv1a(&out);
        out.extend_from_slice(&sum.to_le_bytes());
        out
    }

    /// Restores from [`SequenceState::to_bytes`] output; checks everything first and leaves
    /// `self` unchanged on error. Returns the decode mode byte that was saved.
    pub fn load_bytes(&mut self, bytes: &[u8], fingerprint: u64, window: usize) -> Result<u8> {
        let bad = |m: String| Err(Error::InvalidArgument(format!("state: {m}")));
        if bytes.len() < HEADER_LEN + 8 || bytes[..4] != MAGIC {
            return bad("not a liger state (bad magic or too short)".into());
        }
        let u64_at = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap_or([0; 8]));
        let version = u32::from_le_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]);
        if version != VERSION {
            return bad(format!(
                "version {version}, this runtime reads version {VERSION}"
            ));
        }
        if u64_at(8) != fingerprint {
            return bad("it was saved from another model (fingerprint differs)".into());
        }
        if bytes.len() != self.byte_len() {
            return bad(format!(
                "{} bytes, this model's state has {}",
                bytes.len(),
                self.byte_len()
            ));
        }
        let body = bytes.len() - 8;
        if fnv1a(&bytes[..body]) != u64_at(body) {
            return bad("checksum mismatch (corrupted)".into());
        }
        let mode = bytes[16];
        let (pos, window_len) = (u64_at(24), u64_at(32));
        if pos > MAX_POSITION {
            return bad(format!(
                "position {pos} is beyond any sequence (at most 2^48)"
            ));
        }
        if window_len > window as u64 || window_len > pos {
            return bad(format!(
                "window length {window_len} is impossible at position {pos}"
            ));
        }
        let mut floats = bytes[HEADER_LEN..body]
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]));
        for part in [
            &mut self.recurrent,
            &mut self.window_keys,
            &mut self.window_values,
            &mut self.logits,
        ] {
            for v in part.iter_mut() {
                *v = floats.next().unwrap_or(0.0);
            }
        }
        self.pos = pos as usize;
        self.window_len = window_len as usize;
        Ok(mode)
    }
}

const HEADER_LEN: usize = 40;
/// Largest position a restored state may hold: far beyond any real sequence (2^48 tokens), and
/// far enough from `usize::MAX` that feeding more can never overflow.
const MAX_POSITION: u64 = 1 << 48;
