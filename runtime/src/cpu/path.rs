//! Which kernel runs a product: the paths a `WeightMatrix` product can take, chosen in one
//! place (`WeightMatrix::path`), and what `liger info --kernels` prints of them.

/// Which kernel a product runs over some tokens: `WeightMatrix::path` picks it (from the
/// matrix's type, this CPU's kernels and the token count), `WeightMatrix::matmul` runs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Path {
    /// Each row dequantized once to f32 and dotted with every token (quantized rows, f32
    /// activations: a type without an 8-bit kernel, over several tokens).
    Dequantized,
    /// The rows repacked in groups of 8, one register lane per row, against every token
    /// (decode; and Q6_K's prefill, which has no panels).
    Groups,
    /// Four rows at once against every token: each row is read once for all (decode).
    FourRows,
    /// One row at a time against every token (one token of a type without multi-row kernels).
    OneRow,
    /// Panels of 8 / 16 rows packed per chunk against tiles of tokens (prefill).
    Panels,
    /// Each row against four tokens at a time (prefill of a type without panels).
    FourTokens,
    /// Each row against each token (prefill of a type without four-token kernels).
    OneToken,
}

impl Path {
    pub fn name(self) -> &'static str {
        match self {
            Path::Dequantized => "dequantized rows",
            Path::Groups => "repacked 8-row groups",
            Path::FourRows => "4 rows at once",
            Path::OneRow => "row by row",
            Path::Panels => "packed panels",
            Path::FourTokens => "4 tokens at once",
            Path::OneToken => "token by token",
        }
    }

    /// Whether the path shares out stretches of rows, each against every token (decode): the
    /// products of one input can then run in one parallel job (`matmul_together`).
    pub(super) fn by_rows(self) -> bool {
        matches!(self, Path::Groups | Path::FourRows | Path::OneRow)
    }
}

/// Which activation forms a product has for its tokens.
#[derive(Clone, Copy)]
pub(super) struct Held {
    pub q8: bool,
    pub q16: bool,
    /// Neither quantized form at all (f32 only).
    pub none: bool,
}
