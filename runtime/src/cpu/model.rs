//! A model as the CPU backend runs it: the worker pool its steps run on and the matrices
//! repacked for its kernels — what a model opened on a GPU never has. Every CPU backend of a
//! model shares one (made when the first opens, let go with the last), so a second backend or
//! session neither repacks nor starts threads again.

use super::linear::WeightMatrix;
use super::packed;
use super::pool::{WorkerPool, TASKS_PER_THREAD};
use super::simd::SimdLevel;
use crate::error::{Error, Result};
use crate::model::{MatrixRef, Model};
use std::sync::{Arc, Mutex, Weak};

pub struct CpuModel {
    pub model: Arc<Model>,
    pub(crate) pool: WorkerPool,
    /// The level of the kernels its products run (the model's configured one).
    pub simd: SimdLevel,
    /// Repacked copies of the product matrices the kernels of `simd` read repacked
    /// ([`packed`]), by the matrix's offset in the file, sorted.
    packed: Vec<(usize, Vec<u8>)>,
}

/// The live CPU models, one per model.
static SHARED: Mutex<Vec<Weak<CpuModel>>> = Mutex::new(Vec::new());

impl CpuModel {
    /// The CPU model of `model`: the one a live CPU backend already made, or a new one (its
    /// threads started, its matrices repacked). An error if the threads cannot start.
    pub fn shared(model: &Arc<Model>) -> Result<Arc<CpuModel>> {
        let mut shared = SHARED.lock().unwrap_or_else(|e| e.into_inner());
        shared.retain(|w| w.strong_count() > 0);
        if let Some(cpu) = live(&shared, model) {
            return Ok(cpu);
        }
        let mut cpu = CpuModel::unrepacked(model)?;
        cpu.packed = repack(&cpu);
        let cpu = Arc::new(cpu);
        shared.push(Arc::downgrade(&cpu));
        Ok(cpu)
    }

    /// The CPU model of `model` a live CPU backend holds, if one does.
    pub fn existing(model: &Arc<Model>) -> Option<Arc<CpuModel>> {
        live(&SHARED.lock().unwrap_or_else(|e| e.into_inner()), model)
    }

    /// A CPU model of its own that reads every matrix in place (the GPU self-test's reference,
    /// whose products dequantize the weights anyway).
    pub fn unrepacked(model: &Arc<Model>) -> Result<CpuModel> {
        let threads = model.threads();
        let pool = WorkerPool::new(threads)
            .map_err(|e| Error::InvalidArgument(format!("cannot start {threads} threads: {e}")))?;
        Ok(CpuModel {
            model: Arc::clone(model),
            pool,
            simd: model.simd,
            packed: Vec::new(),
        })
    }

    /// A CPU model whose steps run on the calling thread alone, reading every matrix in place
    /// (where threads cannot start).
    pub fn single_threaded(model: &Arc<Model>) -> CpuModel {
        CpuModel {
            model: Arc::clone(model),
            pool: WorkerPool::calling_thread(),
            simd: model.simd,
            packed: Vec::new(),
        }
    }

    /// A matrix of the model as the CPU kernels read it: in place, or its repacked copy.
    pub(crate) fn matrix(&self, m: &MatrixRef) -> WeightMatrix<'_> {
        let view = self.model.matrix_view(m);
        let w = WeightMatrix::new(m.ty, m.rows, m.cols, view.data, self.simd);
        match self.packed.binary_search_by_key(&m.offset(), |(at, _)| *at) {
            Ok(i) => w.with_packed(&self.packed[i].1, self.simd),
            Err(_) => w,
        }
    }

    /// Worker threads of its steps.
    pub fn threads(&self) -> usize {
        self.pool.threads()
    }

    /// Bytes of the repacked matrices (held in memory instead of their pages of the file).
    pub fn repacked_bytes(&self) -> u64 {
        self.packed.iter().map(|(_, p)| p.len() as u64).sum()
    }
}

/// The live CPU model of `model` among `shared`.
fn live(shared: &[Weak<CpuModel>], model: &Arc<Model>) -> Option<Arc<CpuModel>> {
    shared
        .iter()
        .filter_map(Weak::upgrade)
        .find(|c| Arc::ptr_eq(&c.model, model))
}

/// Repacked copies of every product matrix whose type the kernels of `cpu.simd` read repacked
/// (Q4_0, Q8_0, Q4_K and Q6_K on x86, Q4_0 on NEON with dot products; `LIGER_REPACK=0` keeps
/// them all in place), on the pool, sorted by offset; the file's pages of each are let go (a
/// tied embedding's rows are gathered from the file, so only the rows of the tokens seen come
/// back).
fn repack(cpu: &CpuModel) -> Vec<(usize, Vec<u8>)> {
    if std::env::var("LIGER_REPACK").is_ok_and(|v| v == "0") {
        return Vec::new();
    }
    let (file, pool) = (cpu.model.file(), &cpu.pool);
    let mut out: Vec<(usize, Vec<u8>)> = Vec::new();
    for m in cpu.model.weights.products() {
        let view = cpu.model.matrix_view(&m);
        let at = m.offset();
        if !WeightMatrix::repacks(m.ty, m.cols, cpu.simd) || out.iter().any(|(o, _)| *o == at) {
            continue;
        }
        let mut copy = vec![0u8; packed::packed_len(m.ty, m.rows, m.cols)];
        // Stretches of groups on the pool's threads.
        let (group_rows, group_bytes) = (packed::GROUP_ROWS, packed::group_bytes(m.ty, m.cols));
        let groups_per_task = m
            .rows
            .div_ceil(group_rows)
            .div_ceil(TASKS_PER_THREAD * pool.threads());
        let row_bytes = view.data.len() / m.rows;
        pool.for_each_chunk(&mut copy, groups_per_task * group_bytes, &|i, part| {
            let first = i * groups_per_task * group_rows;
            let rows = (part.len() / group_bytes * group_rows).min(m.rows - first);
            packed::pack(m.ty, &view.data[first * row_bytes..], rows, m.cols, part);
        });
        file.forget_pages(at, view.data.len());
        out.push((at, copy));
    }
    out.sort_by_key(|(at, _)| *at);
    out
}
