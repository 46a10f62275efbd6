//! The model step, written once: the ops of one step over a chunk of T token rows (the
//! stacked rows of every sequence of the step), in order, over named buffers. Every backend
//! runs this plan: the CPU executes each op (`cpu/step.rs`), the GPU backends lower each op to
//! their kernels (`backend/device_plan.rs`) and launch those. A change to a layer is a change
//! here, then to the op each backend has for it.
//!
//! Shapes: T token rows, D hidden, F ffn, H heads, Hkv KV heads, d head dim, W window,
//! V vocab, S sequences of the step.

use super::Model;

/// A buffer a step op names: the activations of the step's rows, a sequence's state, or a
/// weight vector of the model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Buf {
    /// x, the residual stream [T, D]; h, normed [T, D]; q [T, H·d]; k, v [T, Hkv·d]; o_rec
    /// (recurrent readout) and y (window attention, then the mix) [T, H·d]; proj, a product
    /// into D [T, D]; gate, up [T, F].
    X,
    H,
    Q,
    K,
    V,
    ORec,
    Y,
    Proj,
    Gate,
    Up,
    /// The logits [S, V] (of each sequence's last row, or of every row when asked).
    Logits,
    /// Per token [cos (d/2), sin (d/2)] of its position [T, d].
    Rope,
    /// Layer l's recurrent state: [Hkv, d, d] (GLA, HGRN2) or [Hkv, 2·d·M] (GSA: keys K d×M,
    /// values V M×d).
    State(usize),
    /// Layer l's window ring of RoPE'd keys / values [W, Hkv·d].
    RingKeys(usize),
    RingValues(usize),
    /// Weights: layer l's norms [D], its q / k / v biases [H·d] / [Hkv·d], the final norm [D].
    AttnNorm(usize),
    FfnNorm(usize),
    Bias(usize, Projection),
    OutputNorm,
}

impl Buf {
    /// The activations of a step's rows, in the order backends keep them.
    pub const ROWS: [Buf; 10] = [
        Buf::X,
        Buf::H,
        Buf::Q,
        Buf::K,
        Buf::V,
        Buf::ORec,
        Buf::Y,
        Buf::Proj,
        Buf::Gate,
        Buf::Up,
    ];

    /// Its place in [`Buf::ROWS`] (`None` for the others).
    pub fn row_index(self) -> Option<usize> {
        Buf::ROWS.iter().position(|&b| b == self)
    }

    /// Values per token row of a row buffer, or of a weight vector (`None` for a state).
    pub fn width(self, c: &crate::config::LigerConfig) -> Option<usize> {
        let (hd, kv) = (c.n_heads * c.head_dim, c.n_kv_heads * c.head_dim);
        Some(match self {
            Buf::X | Buf::H | Buf::Proj | Buf::AttnNorm(_) | Buf::FfnNorm(_) | Buf::OutputNorm => {
                c.hidden
            }
            Buf::Q | Buf::ORec | Buf::Y | Buf::Bias(_, Projection::Q) => hd,
            Buf::K | Buf::V | Buf::Bias(_, _) => kv,
            Buf::Gate | Buf::Up => c.ffn,
            Buf::Logits => c.vocab_size,
            Buf::Rope => c.head_dim,
            Buf::State(_) | Buf::RingKeys(_) | Buf::RingValues(_) => return None,
        })
    }
}

/// The front-end projections that may have a bias.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Projection {
    Q = 0,
    K = 1,
    V = 2,
}

/// A weight matrix as a product names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Matrix {
    /// Layer l's: 0 q, 1 k, 2 v, 3 o, 4 gate, 5 up, 6 down ([`LAYER_MATRICES`]).
    Layer(usize, usize),
    /// The LM head [V, D] (or the tied embedding).
    Output,
}

/// The order of a layer's matrices in [`Matrix::Layer`].
pub const LAYER_MATRICES: [&str; 7] = ["q", "k", "v", "o", "gate", "up", "down"];

/// One op of the step. Ops over rows treat every row alike; [`Op::TokenMixer`] and
/// [`Op::OutputNorm`] work per sequence (its state, its window, its last row).
#[derive(Clone, Debug, PartialEq)]
pub enum Op {
    /// `out[t] = RMSNorm(x[t]) · weight` for every row ([T, D]).
    RmsNorm { x: Buf, weight: Buf, out: Buf },
    /// `y_i[t] = W_i · x[t]` for every row and each (W_i, y_i): a group of matrices that read
    /// the same input (q/k/v, gate/up) — the CPU runs a group as one parallel pass.
    Products { x: Buf, outputs: Vec<(Matrix, Buf)> },
    /// `out[t] += bias` for every row.
    AddBias { out: Buf, bias: Buf },
    /// Layer l's token mixer, per sequence, on q, k, v [T, ·]:
    /// the recurrent branch on the raw q, k — `o_rec = readout(state_l updated by k, v; q)` —,
    /// the sliding-window attention of RoPE(q) over the ring's keys / values and the chunk's
    /// own RoPE(k), v (causal, the last W positions) into y, then the chunk's RoPE(k), v
    /// written into the ring. q and k are left RoPE'd or not, as a backend likes.
    TokenMixer { layer: usize },
    /// `y = mix_swa·y + (1 − mix_swa)·o_rec` ([T, H·d]).
    Mix { window: Buf, recurrent: Buf },
    /// `x += y` (the residual, [T, D]).
    Add { x: Buf, y: Buf },
    /// `gate = silu(gate) ⊙ up` ([T, F]).
    Swiglu { gate: Buf, up: Buf },
    /// `h[s] = RMSNorm(x[r]) · output norm` for each sequence's last row r (or every row when a
    /// caller wants every token's logits), packed from h's first row.
    OutputNorm,
    /// `logits = W_out · h` over the rows [`Op::OutputNorm`] packed.
    Logits,
}

/// The ops of one step, in order.
#[derive(Clone, Debug)]
pub struct StepPlan {
    pub ops: Vec<Op>,
    /// Ops from here on (the final norm and the LM head) run only when logits are wanted.
    pub head_from: usize,
}

impl StepPlan {
    /// The step of `model`: every layer, then the head. Before it, each row of x holds its
    /// token's embedding and each row of the RoPE table its position's angles.
    pub fn new(model: &Model) -> StepPlan {
        use Buf::*;
        let mut ops = Vec::new();
        for (l, lw) in model.weights.layers.iter().enumerate() {
            // Front end: h = RMSNorm(x) [T, D]; q [T, H·d], k, v [T, Hkv·d] = W·h (+ b).
            ops.push(Op::RmsNorm {
                x: X,
                weight: AttnNorm(l),
                out: H,
            });
            let qkv = vec![
                (Matrix::Layer(l, 0), Q),
                (Matrix::Layer(l, 1), K),
                (Matrix::Layer(l, 2), V),
            ];
            ops.push(Op::Products { x: H, outputs: qkv });
            let biases = [
                (Q, Projection::Q, &lw.bq),
                (K, Projection::K, &lw.bk),
                (V, Projection::V, &lw.bv),
            ];
            for (out, projection, bias) in biases {
                if bias.is_some() {
                    ops.push(Op::AddBias {
                        out,
                        bias: Bias(l, projection),
                    });
                }
            }
            // Token mixer: recurrent branch o_rec and sliding window y [T, H·d], then their mix.
            ops.push(Op::TokenMixer { layer: l });
            ops.push(Op::Mix {
                window: Y,
                recurrent: ORec,
            });
            // Output projection proj = W_o·y [T, D], residual.
            ops.push(Op::Products {
                x: Y,
                outputs: vec![(Matrix::Layer(l, 3), Proj)],
            });
            ops.push(Op::Add { x: X, y: Proj });
            // SwiGLU MLP: gate, up = W·RMSNorm(x) [T, F]; proj = W_down·(silu(gate) ⊙ up)
            // [T, D]; residual.
            ops.push(Op::RmsNorm {
                x: X,
                weight: FfnNorm(l),
                out: H,
            });
            let gate_up = vec![(Matrix::Layer(l, 4), Gate), (Matrix::Layer(l, 5), Up)];
            ops.push(Op::Products {
                x: H,
                outputs: gate_up,
            });
            ops.push(Op::Swiglu { gate: Gate, up: Up });
            ops.push(Op::Products {
                x: Gate,
                outputs: vec![(Matrix::Layer(l, 6), Proj)],
            });
            ops.push(Op::Add { x: X, y: Proj });
        }
        let head_from = ops.len();
        ops.push(Op::OutputNorm);
        ops.push(Op::Logits);
        StepPlan { ops, head_from }
    }

    /// The ops of every layer (without the head).
    pub fn layers(&self) -> &[Op] {
        &self.ops[..self.head_from]
    }
}
