//! Weight matrices on a CUDA device, in the plane layout of [`crate::quant::planes`], and the
//! products `y[t] = W·x[t]` of `kernels/matvec.cu`.

use super::{driver_error, CudaDevice};
use crate::error::{Error, Result};
use crate::quant::planes::to_planes;
use crate::quant::GgmlType;
use cudarc::driver::{CudaSlice, CudaStream, LaunchConfig, PushKernelArg};

/// Warps per block of `matvec.cu`.
const WARPS_PER_BLOCK: usize = 4;

/// A `[rows, cols]` weight matrix on the device.
pub struct CudaMatrix {
    pub ty: GgmlType,
    pub rows: usize,
    pub cols: usize,
    /// Quant words (or the raw F32 / F16 / BF16 words), row-major.
    quants: CudaSlice<u32>,
    /// f16 scales, two per word, one per block (one word of zeros for types without).
    scales: CudaSlice<u32>,
}

impl CudaMatrix {
    /// Uploads a ggml tensor's bytes (`rows` rows of `cols` weights of type `ty`).
    pub fn upload(
        dev: &CudaDevice,
        ty: GgmlType,
        rows: usize,
        cols: usize,
        data: &[u8],
    ) -> Result<CudaMatrix> {
        dev.kernels.product(ty)?;
        if rows == 0 || rows > u32::MAX as usize || cols > u32::MAX as usize {
            return Err(Error::Unsupported(format!(
                "CUDA matrix of {rows}x{cols}: empty or too large"
            )));
        }
        let (quants, scales) = to_planes(ty, rows, cols, data)?;
        let upload = |words: &[u32]| {
            dev.stream
                .clone_htod(words)
                .map_err(driver_error("weight upload"))
        };
        Ok(CudaMatrix {
            ty,
            rows,
            cols,
            quants: upload(&quants)?,
            scales: upload(&scales)?,
        })
    }

    /// Bytes one product reads.
    pub fn bytes(&self) -> u64 {
        4 * (self.quants.len() + self.scales.len()) as u64
    }

    /// Queues `y[t] = W·x[t]` on `stream` for `tokens` rows (x: [tokens, cols], y: [tokens,
    /// rows] f32 on the device, used on that stream only); `st` is the step buffer whose fourth
    /// word holds `tokens` when it is > 1.
    pub fn launch(
        &self,
        dev: &CudaDevice,
        stream: &CudaStream,
        x: &CudaSlice<f32>,
        y: &CudaSlice<f32>,
        tokens: usize,
        st: &CudaSlice<u32>,
    ) -> Result<()> {
        if x.len() < tokens * self.cols || y.len() < tokens * self.rows {
            return Err(Error::InvalidArgument(format!(
                "CUDA product of a {}x{} matrix over {tokens} tokens: x holds {}, y {}",
                self.rows,
                self.cols,
                x.len(),
                y.len()
            )));
        }
        let (matvec, matmul) = dev.kernels.product(self.ty)?;
        // matvec: `rows_per_warp` rows per warp; matmul: one.
        let rows_per_block = WARPS_PER_BLOCK
            * if tokens == 1 {
                dev.kernels.rows_per_warp as usize
            } else {
                1
            };
        let cfg = LaunchConfig {
            grid_dim: (self.rows.div_ceil(rows_per_block) as u32, 1, 1),
            block_dim: (32 * WARPS_PER_BLOCK as u32, 1, 1),
            shared_mem_bytes: 0,
        };
        let (rows, cols) = (self.rows as u32, self.cols as u32);
        let mut call = stream.launch_builder(if tokens == 1 { matvec } else { matmul });
        call.arg(&self.quants)
            .arg(&self.scales)
            .arg(x)
            .arg(y)
            .arg(&rows)
            .arg(&cols);
        if tokens != 1 {
            call.arg(st);
        }
        // SAFETY: the arguments match `matvec_<type>(q, s, x, y, rows, cols)` /
        // `matmul_<type>(.., st)`; the planes hold rows·cols weights of the kernel's type (made
        // by `to_planes`, which checks the byte count), x and y hold `tokens` rows (checked
        // above) and st's fourth word is `tokens` (the caller's contract). x, y and st are used
        // on this one stream, in order; the planes were written before any stream reads them
        // (the device stream is synchronized after a model's upload).
        unsafe { call.launch(cfg) }
            .map(|_| ())
            .map_err(driver_error("matvec launch"))
    }

    /// `W·x[t]` for `tokens` host rows `x` ([tokens, cols]), synchronously (tests and one-off
    /// products); returns [tokens, rows].
    pub fn run(&self, dev: &CudaDevice, x: &[f32], tokens: usize) -> Result<Vec<f32>> {
        if tokens == 0 || x.len() != self.cols * tokens {
            return Err(Error::InvalidArgument(format!(
                "product input of {} values for {tokens} tokens of {} columns",
                x.len(),
                self.cols
            )));
        }
        let s = &dev.stream;
        let xd = s.clone_htod(x).map_err(driver_error("upload"))?;
        let yd = s
            .alloc_zeros::<f32>(self.rows * tokens)
            .map_err(driver_error("alloc"))?;
        let st = s
            .clone_htod(&[0u32, 0, 0, tokens as u32])
            .map_err(driver_error("upload"))?;
        self.launch(dev, s, &xd, &yd, tokens, &st)?;
        s.clone_dtoh(&yd).map_err(driver_error("readback"))
    }
}
