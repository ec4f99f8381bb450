//! CPU kernels of the 2-D convolution ([`super::conv`]): NCHW `im2col`, one GEMM per sample,
//! `col2im` for the input gradient. No layout change, no scatter, no transposed convolution.
//!
//! For one sample, with `X_col[(i, k_y, k_x), p] = x[i, o_y s_y + k_y d_y − p_y, o_x s_x + k_x d_x − p_x]`
//! (zero outside the image) and `W` the weight as a `[c_out, c_in k_h k_w]` matrix:
//!
//! $$ Y = W X_\text{col} + \beta \mathbf 1^\top,\qquad
//!    \partial_W L = \textstyle\sum_b \partial_Y L\\, X_\text{col}^\top,\qquad
//!    \partial_x L = \operatorname{col2im}(W^\top \partial_Y L), $$
//!
//! where `col2im` adds every entry of a `[c_in k_h k_w, h' w']` matrix back onto the input
//! pixel `im2col` read it from. Both go through a zero-padded copy of each input plane, so
//! that a row of `X_col` is a fixed-offset read of it: for stride 1, runs of whole rows.
//!
//! **Why.** burn-flex 0.21's convolution builds NHWC `im2col` tiles element by element and
//! writes the GEMM result back to NCHW with a channel-strided scatter; its input gradient is a
//! transposed 3-D convolution with the same pattern. In a `perf` profile of the 16×16 teacher
//! step those loops were about 23 % and `conv_transpose3d_f32` 12 % (docs/performance.md).
//!
//! Samples are spread over the rayon pool when there are at least as many as threads; with
//! fewer (sampling one image) the GEMM itself is parallel.

use gemm::Parallelism;
use rayon::prelude::*;
use std::cell::RefCell;

/// Shapes and options of one convolution (ungrouped).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    /// Input channels, height, width.
    pub c_in: usize,
    /// Input height.
    pub h: usize,
    /// Input width.
    pub w: usize,
    /// Output channels.
    pub c_out: usize,
    /// Kernel height and width.
    pub k: [usize; 2],
    /// Stride (y, x).
    pub stride: [usize; 2],
    /// Zero padding (y, x), on both sides.
    pub padding: [usize; 2],
    /// Dilation (y, x).
    pub dilation: [usize; 2],
}

impl Geometry {
    /// Output size `(h', w')`: `⌊(n + 2p − d(k − 1) − 1)/s⌋ + 1` per axis.
    pub fn out(&self) -> [usize; 2] {
        let o = |n: usize, k: usize, s: usize, p: usize, d: usize| match (n + 2 * p)
            .checked_sub(d * (k - 1) + 1)
        {
            Some(room) => room / s + 1,
            None => 0,
        };
        [
            o(
                self.h,
                self.k[0],
                self.stride[0],
                self.padding[0],
                self.dilation[0],
            ),
            o(
                self.w,
                self.k[1],
                self.stride[1],
                self.padding[1],
                self.dilation[1],
            ),
        ]
    }

    /// Rows of `X_col`: `c_in k_h k_w`.
    pub fn col_len(&self) -> usize {
        self.c_in * self.k[0] * self.k[1]
    }

    /// A 1×1 kernel with stride 1 and no padding: `X_col` is the input itself.
    fn pointwise(&self) -> bool {
        self.k == [1, 1] && self.stride == [1, 1] && self.padding == [0, 0]
    }

    fn spatial_out(&self) -> usize {
        let [oh, ow] = self.out();
        oh * ow
    }
}

/// `X_col` of one sample: `x` is `[c_in, h, w]`, `col` is `[c_in k_h k_w, h' w']`, every
/// entry written (`col` may hold anything).
///
/// Each input plane is copied once into a zero-padded plane `P` (`h_p × w_p`, `h_p = h + 2p_y`,
/// `w_p = w + 2p_x`; its border is zeroed once per call and each plane rewrites only the
/// interior); the row of tap `(k_y, k_x)` is then, for each output row `o_y`, the `w'` values
/// of `P`'s row `o_y s_y + k_y d_y` from column `k_x d_x` in steps of `s_x`: no bounds tests,
/// no fills, and for `s_x = 1` one contiguous run.
pub fn im2col(g: &Geometry, x: &[f32], col: &mut [f32]) {
    let [oh, ow] = g.out();
    let sp = oh * ow;
    debug_assert_eq!(x.len(), g.c_in * g.h * g.w);
    debug_assert_eq!(col.len(), g.col_len() * sp);
    if sp == 0 {
        return;
    }
    let ([py, px], [sy, sx], [dy, dx]) = (g.padding, g.stride, g.dilation);
    let (hp, wp) = (g.h + 2 * py, g.w + 2 * px);
    let padded = g.padding != [0, 0];
    let mut pad = vec![0.0f32; if padded { hp * wp } else { 0 }];
    let mut rows = col.chunks_exact_mut(sp);
    for plane in x.chunks_exact(g.h * g.w) {
        let p: &[f32] = if padded {
            runs(&mut pad[py * wp + px..], wp, plane, g.w, g.w, g.h, false);
            &pad
        } else {
            plane
        };
        for ky in 0..g.k[0] {
            for kx in 0..g.k[1] {
                let dst = rows.next().expect("one row per (channel, tap)");
                let p = &p[ky * dy * wp + kx * dx..];
                if sx == 1 {
                    runs(dst, ow, p, sy * wp, ow, oh, false);
                } else {
                    for (oy, seg) in dst.chunks_exact_mut(ow).enumerate() {
                        let src = &p[oy * sy * wp..];
                        for (j, v) in seg.iter_mut().enumerate() {
                            *v = src[j * sx];
                        }
                    }
                }
            }
        }
    }
}

/// Adds every entry of `col` (`[c_in k_h k_w, h' w']`) onto the input pixel [`im2col`] reads
/// it from; `dx` is `[c_in, h, w]` and is accumulated into. The adjoint of [`im2col`]'s
/// reads: each tap's values are added into a zeroed padded plane, whose interior is then
/// added onto `dx`.
pub fn col2im(g: &Geometry, col: &[f32], dx: &mut [f32]) {
    let [oh, ow] = g.out();
    let sp = oh * ow;
    debug_assert_eq!(dx.len(), g.c_in * g.h * g.w);
    debug_assert_eq!(col.len(), g.col_len() * sp);
    if sp == 0 {
        return;
    }
    let ([py, px], [sy, sx], [dy, ddx]) = (g.padding, g.stride, g.dilation);
    let (hp, wp) = (g.h + 2 * py, g.w + 2 * px);
    let padded = g.padding != [0, 0];
    let mut pad = vec![0.0f32; if padded { hp * wp } else { 0 }];
    let mut rows = col.chunks_exact(sp);
    let mut taps = |p: &mut [f32]| {
        for ky in 0..g.k[0] {
            for kx in 0..g.k[1] {
                let src = rows.next().expect("one row per (channel, tap)");
                let p = &mut p[ky * dy * wp + kx * ddx..];
                if sx == 1 {
                    runs(p, sy * wp, src, ow, ow, oh, true);
                } else {
                    for (oy, seg) in src.chunks_exact(ow).enumerate() {
                        let dst = &mut p[oy * sy * wp..];
                        for (j, &v) in seg.iter().enumerate() {
                            dst[j * sx] += v;
                        }
                    }
                }
            }
        }
    };
    for plane in dx.chunks_exact_mut(g.h * g.w) {
        if padded {
            pad.fill(0.0);
            taps(&mut pad);
            runs(plane, g.w, &pad[py * wp + px..], wp, g.w, g.h, true);
        } else {
            taps(plane);
        }
    }
}

/// `rows` runs of `len` values: `dst[r·ds + j] = src[r·ss + j]` (or `+=` with `add`).
///
/// Why: the runs of the networks' images are 4–32 values, and a `memcpy`/`memset` call per
/// run cost more than the copy (in a `perf` profile of the 16×16 teacher step, `im2col`,
/// `col2im` and their `memcpy`/`memset` calls were a third of all samples; docs/performance.md,
/// change 12). Runs of 4, 8, 16 or 32 are fixed-size array copies, which compile to a few
/// vector moves.
#[inline(always)]
fn runs(dst: &mut [f32], ds: usize, src: &[f32], ss: usize, len: usize, rows: usize, add: bool) {
    #[inline(always)]
    fn fixed<const N: usize>(
        dst: &mut [f32],
        ds: usize,
        src: &[f32],
        ss: usize,
        rows: usize,
        add: bool,
    ) {
        for r in 0..rows {
            let d: &mut [f32; N] = (&mut dst[r * ds..r * ds + N]).try_into().expect("N values");
            let s: &[f32; N] = (&src[r * ss..r * ss + N]).try_into().expect("N values");
            if add {
                for j in 0..N {
                    d[j] += s[j];
                }
            } else {
                *d = *s;
            }
        }
    }
    match len {
        4 => fixed::<4>(dst, ds, src, ss, rows, add),
        8 => fixed::<8>(dst, ds, src, ss, rows, add),
        16 => fixed::<16>(dst, ds, src, ss, rows, add),
        32 => fixed::<32>(dst, ds, src, ss, rows, add),
        _ => {
            for r in 0..rows {
                let (d, s) = (&mut dst[r * ds..r * ds + len], &src[r * ss..r * ss + len]);
                if add {
                    d.iter_mut().zip(s).for_each(|(a, b)| *a += b);
                } else {
                    d.copy_from_slice(s);
                }
            }
        }
    }
}

thread_local! {
    /// This thread's scratch of [`forward`] and [`backward`] (`X_col` and `Wᵀ ∂Y_b`), kept
    /// between calls at the largest size seen.
    static SCRATCH: RefCell<(Vec<f32>, Vec<f32>)> = const { RefCell::new((Vec::new(), Vec::new())) };
}

/// Runs `f` on two scratch buffers of `n0` and `n1` values with arbitrary contents: this
/// thread's, or fresh ones if they are in use (a kernel that waits inside a parallel GEMM may
/// run another kernel's task meanwhile).
///
/// Why: a fresh zeroed buffer per call or per rayon task (a `calloc` and a `memset` of up to a
/// few MiB) was a visible share of a two-thread step (docs/performance.md, change 11).
fn with_scratch<R>(n0: usize, n1: usize, f: impl FnOnce(&mut [f32], &mut [f32]) -> R) -> R {
    SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut bufs) => {
            let (a, b) = &mut *bufs;
            if a.len() < n0 {
                a.resize(n0, 0.0);
            }
            if b.len() < n1 {
                b.resize(n1, 0.0);
            }
            f(&mut a[..n0], &mut b[..n1])
        }
        Err(_) => f(&mut vec![0.0; n0], &mut vec![0.0; n1]),
    })
}

/// A row-major matrix view: `data[r·rs + c·cs]` for `r < rows`, `c < cols`.
#[derive(Debug, Clone, Copy)]
pub(super) struct Mat<'a> {
    data: &'a [f32],
    rows: usize,
    cols: usize,
    rs: usize,
    cs: usize,
}

impl<'a> Mat<'a> {
    /// `data` as a row-major `[rows, cols]` matrix.
    pub(super) fn new(data: &'a [f32], rows: usize, cols: usize) -> Self {
        Mat {
            data,
            rows,
            cols,
            rs: cols,
            cs: 1,
        }
    }

    /// `data[r·rs + c·cs]`: a matrix whose rows are `rs` apart (e.g. every third row of a
    /// larger one).
    pub(super) fn strided(data: &'a [f32], rows: usize, cols: usize, rs: usize, cs: usize) -> Self {
        Mat {
            data,
            rows,
            cols,
            rs,
            cs,
        }
    }

    /// The transpose (a view: strides swapped).
    pub(super) fn t(self) -> Self {
        Mat {
            rows: self.cols,
            cols: self.rows,
            rs: self.cs,
            cs: self.rs,
            ..self
        }
    }

    fn fits(&self) -> bool {
        self.rows == 0
            || self.cols == 0
            || (self.rows - 1) * self.rs + (self.cols - 1) * self.cs < self.data.len()
    }
}

/// `dst = a·b` (or `dst += a·b` with `accumulate`), `dst` row-major `[a.rows, b.cols]`.
pub(super) fn matmul(dst: &mut [f32], a: Mat, b: Mat, accumulate: bool, par: Parallelism) {
    let n = b.cols;
    matmul_into(dst, (n, 1), a, b, accumulate, par);
}

/// [`matmul`] into `dst` `[a.rows, b.cols]` with strides `(rs, cs)` = `dst_strides`: rows of
/// contiguous values at least a row apart (`cs = 1`, `rs ≥ b.cols`; `rs = b.cols` is
/// row-major), or the same for columns (`rs = 1`, `cs ≥ a.rows`).
pub(super) fn matmul_into(
    dst: &mut [f32],
    dst_strides: (usize, usize),
    a: Mat,
    b: Mat,
    accumulate: bool,
    par: Parallelism,
) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    let (dst_rs, dst_cs) = dst_strides;
    // distinct (row, column) pairs never share an element, and the last one is inside `dst`
    let apart = (dst_cs == 1 && dst_rs >= n) || (dst_rs == 1 && dst_cs >= m);
    let end = if m == 0 || n == 0 {
        0
    } else {
        (m - 1) * dst_rs + (n - 1) * dst_cs + 1
    };
    assert!(
        apart && b.rows == k && end <= dst.len() && a.fits() && b.fits(),
        "matmul: [{m}, {k}]·[{}, {n}] into {} values",
        b.rows,
        dst.len()
    );
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        // an empty sum: zeros at the `m·n` positions (only those: a strided `dst` has others)
        if !accumulate {
            for i in 0..m {
                for j in 0..n {
                    dst[i * dst_rs + j * dst_cs] = 0.0;
                }
            }
        }
        return;
    }
    // SAFETY: the assert above keeps every index the GEMM reads or writes inside the slices
    // (`dst`'s last element is inside it and no two of its elements coincide; `a`, `b` fit
    // their strides), and `dst` does not alias them (it is a unique borrow).
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            dst_cs as isize,
            dst_rs as isize,
            accumulate,
            a.data.as_ptr(),
            a.cs as isize,
            a.rs as isize,
            b.data.as_ptr(),
            b.cs as isize,
            b.rs as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            par,
        );
    }
}

/// `dst = srcᵀ`: `src` row-major `[rows, cols]`, `dst` row-major `[cols, rows]`, in square
/// tiles so that both sides stay in cache.
fn transpose(src: &[f32], rows: usize, cols: usize, dst: &mut [f32]) {
    const TILE: usize = 16;
    assert!(
        src.len() >= rows * cols && dst.len() >= rows * cols,
        "transpose: buffer sizes"
    );
    for r0 in (0..rows).step_by(TILE) {
        let r1 = (r0 + TILE).min(rows);
        for c0 in (0..cols).step_by(TILE) {
            let c1 = (c0 + TILE).min(cols);
            for r in r0..r1 {
                let row = &src[r * cols + c0..r * cols + c1];
                for (c, &v) in (c0..c1).zip(row) {
                    dst[c * rows + r] = v;
                }
            }
        }
    }
}

/// How to use the pool for `batch` samples: over samples, or inside each GEMM.
fn split(batch: usize) -> (bool, Parallelism) {
    let threads = rayon::current_num_threads();
    if threads > 1 && batch >= threads {
        (true, Parallelism::None)
    } else if threads > 1 {
        (false, Parallelism::Rayon(0))
    } else {
        (false, Parallelism::None)
    }
}

/// `y = conv(x, w) + β`: `x` is `[b, c_in, h, w]`, `weight` `[c_out, c_in, k_h, k_w]`, `bias`
/// `[c_out]`; returns `[b, c_out, h', w']` values.
pub fn forward(g: &Geometry, x: &[f32], weight: &[f32], bias: Option<&[f32]>) -> Vec<f32> {
    let (xl, sp, cl) = (g.c_in * g.h * g.w, g.spatial_out(), g.col_len());
    let batch = x.len() / xl.max(1);
    assert_eq!(weight.len(), g.c_out * cl, "conv forward: weight shape");
    let mut y = super::par_zeros(batch * g.c_out * sp);
    if sp == 0 || g.c_out == 0 || xl == 0 {
        return y;
    }
    let (over_batch, par) = split(batch);
    let w = Mat::new(weight, g.c_out, cl);
    let one = |(xb, yb): (&[f32], &mut [f32])| {
        if g.pointwise() {
            matmul(yb, w, Mat::new(xb, cl, sp), false, par);
        } else {
            with_scratch(cl * sp, 0, |col, _| {
                im2col(g, xb, col);
                matmul(yb, w, Mat::new(col, cl, sp), false, par);
            });
        }
        if let Some(bias) = bias {
            for (row, &b) in yb.chunks_exact_mut(sp).zip(bias) {
                row.iter_mut().for_each(|v| *v += b);
            }
        }
    };
    if over_batch {
        x.par_chunks(xl)
            .zip(y.par_chunks_mut(g.c_out * sp))
            .for_each(one);
    } else {
        x.chunks(xl).zip(y.chunks_mut(g.c_out * sp)).for_each(one);
    }
    y
}

/// `(∂L/∂x, ∂L/∂W)` from `dy = ∂L/∂y` (`[b, c_out, h', w']`), each with the layout of `x` and
/// `weight`; either may be skipped.
pub fn backward(
    g: &Geometry,
    x: &[f32],
    weight: &[f32],
    dy: &[f32],
    want_dx: bool,
    want_dw: bool,
) -> (Option<Vec<f32>>, Option<Vec<f32>>) {
    let (xl, sp, cl) = (g.c_in * g.h * g.w, g.spatial_out(), g.col_len());
    let batch = x.len() / xl.max(1);
    assert_eq!(
        dy.len(),
        batch * g.c_out * sp,
        "conv backward: gradient shape"
    );
    let w = Mat::new(weight, g.c_out, cl);
    let (over_batch, par) = split(batch);
    let mut dx = want_dx.then(|| super::par_zeros(x.len()));
    let wl = if want_dw { g.c_out * cl } else { 0 };
    if sp == 0 || xl == 0 {
        // no output pixel: nothing depends on x or w
        return (dx, want_dw.then(|| vec![0.0f32; wl]));
    }
    // One sample: dx_b = col2im(Wᵀ dy_b); dW += dy_b X_colᵀ, with the scratch X_col and Wᵀ dy_b.
    let one = |xb: &[f32], dyb: &[f32], dxb: Option<&mut [f32]>, dw: &mut [f32]| {
        let dyb = Mat::new(dyb, g.c_out, sp);
        if g.pointwise() {
            // X_col = x_b and col2im is the identity
            if want_dw {
                matmul_into(dw, (1, g.c_out), dyb, Mat::new(xb, cl, sp).t(), true, par);
            }
            if let Some(dxb) = dxb {
                matmul(dxb, w.t(), dyb, false, par);
            }
            return;
        }
        let (n_col, n_wdy) = (
            if want_dw { cl * sp } else { 0 },
            if dxb.is_some() { cl * sp } else { 0 },
        );
        with_scratch(n_col, n_wdy, |col, wdy| {
            if want_dw {
                im2col(g, xb, col);
                // `dw` is accumulated column-major (`[cl, c_out]` row-major, transposed once
                // at the end): with a row-major destination the GEMM would pack the strided
                // view X_colᵀ one scalar at a time, a third of the 32×32 teacher step
                // (docs/performance.md, change 9); column-major, it reads X_colᵀ in place and
                // packs only `dy_b`.
                matmul_into(dw, (1, g.c_out), dyb, Mat::new(col, cl, sp).t(), true, par);
            }
            if let Some(dxb) = dxb {
                matmul(wdy, w.t(), dyb, false, par);
                col2im(g, wdy, dxb);
            }
        });
    };
    let dw = if over_batch {
        let partial = |mut dw: Vec<f32>, xb: &[f32], dyb: &[f32], dxb| {
            one(xb, dyb, dxb, &mut dw);
            dw
        };
        let sum = |mut a: Vec<f32>, b: Vec<f32>| {
            a.iter_mut().zip(&b).for_each(|(u, v)| *u += v);
            a
        };
        let zeros = || vec![0.0f32; wl];
        let pairs = x.par_chunks(xl).zip(dy.par_chunks(g.c_out * sp));
        match dx.as_mut() {
            Some(dx) => pairs
                .zip(dx.par_chunks_mut(xl))
                .fold(zeros, |acc, ((xb, dyb), dxb)| {
                    partial(acc, xb, dyb, Some(dxb))
                })
                .reduce(zeros, sum),
            None => pairs
                .fold(zeros, |acc, (xb, dyb)| partial(acc, xb, dyb, None))
                .reduce(zeros, sum),
        }
    } else {
        let mut dw = vec![0.0f32; wl];
        for (bi, (xb, dyb)) in x.chunks(xl).zip(dy.chunks(g.c_out * sp)).enumerate() {
            let dxb = dx.as_mut().map(|d| &mut d[bi * xl..(bi + 1) * xl]);
            one(xb, dyb, dxb, &mut dw);
        }
        dw
    };
    let dw = want_dw.then(|| {
        let mut out = vec![0.0f32; wl];
        transpose(&dw, cl, g.c_out, &mut out);
        out
    });
    (dx, dw)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The convolution written out as its definition, in f64.
    fn direct(g: &Geometry, x: &[f32], w: &[f32], b: usize) -> Vec<f64> {
        let [oh, ow] = g.out();
        let mut y = vec![0.0f64; b * g.c_out * oh * ow];
        for bi in 0..b {
            for o in 0..g.c_out {
                for oy in 0..oh {
                    for ox in 0..ow {
                        let mut acc = 0.0f64;
                        for i in 0..g.c_in {
                            for ky in 0..g.k[0] {
                                for kx in 0..g.k[1] {
                                    let iy = (oy * g.stride[0] + ky * g.dilation[0]) as isize
                                        - g.padding[0] as isize;
                                    let ix = (ox * g.stride[1] + kx * g.dilation[1]) as isize
                                        - g.padding[1] as isize;
                                    if iy < 0 || ix < 0 || iy >= g.h as isize || ix >= g.w as isize
                                    {
                                        continue;
                                    }
                                    let xv = x[((bi * g.c_in + i) * g.h + iy as usize) * g.w
                                        + ix as usize];
                                    let wv = w[((o * g.c_in + i) * g.k[0] + ky) * g.k[1] + kx];
                                    acc += xv as f64 * wv as f64;
                                }
                            }
                        }
                        y[((bi * g.c_out + o) * oh + oy) * ow + ox] = acc;
                    }
                }
            }
        }
        y
    }

    fn values(n: usize, seed: u32) -> Vec<f32> {
        (0..n)
            .map(|i| (((i as u32).wrapping_mul(2_654_435_761) ^ seed) % 1000) as f32 / 500.0 - 1.0)
            .collect()
    }

    fn geometries() -> Vec<Geometry> {
        let g = |c_in, h, w, c_out, k: [usize; 2], s, p, d| Geometry {
            c_in,
            h,
            w,
            c_out,
            k,
            stride: s,
            padding: p,
            dilation: d,
        };
        vec![
            g(3, 5, 5, 4, [3, 3], [1, 1], [1, 1], [1, 1]),
            g(2, 7, 6, 3, [4, 4], [2, 2], [1, 1], [1, 1]),
            g(3, 5, 4, 2, [1, 1], [1, 1], [0, 0], [1, 1]),
            g(2, 6, 7, 2, [3, 2], [2, 1], [0, 2], [2, 1]),
            g(1, 4, 4, 2, [5, 5], [1, 1], [0, 0], [1, 1]), // kernel larger than the image: h' = 0
            g(2, 3, 9, 3, [3, 3], [1, 3], [2, 2], [1, 2]),
            // stride 1 with the fixed-size runs of 4, 8, 16, 32 (the networks' image widths)
            g(1, 4, 4, 2, [3, 3], [1, 1], [1, 1], [1, 1]),
            g(2, 8, 8, 3, [3, 3], [1, 1], [1, 1], [1, 1]),
            g(2, 5, 16, 2, [3, 3], [1, 1], [1, 1], [1, 1]),
            g(1, 3, 32, 2, [3, 3], [1, 1], [1, 1], [1, 1]),
            // stride 1: dilated and padded; unpadded 3×3; a padded 1×1
            g(2, 6, 9, 2, [3, 3], [1, 1], [2, 1], [2, 1]),
            g(2, 6, 8, 2, [3, 3], [1, 1], [0, 0], [1, 1]),
            g(2, 4, 4, 2, [1, 1], [1, 1], [1, 1], [1, 1]),
        ]
    }

    #[test]
    fn matmul_into_rows_of_a_larger_matrix_leaves_the_rest_alone() {
        // dst rows 3·n apart (the attention's q|k|v rows): the product lands on its rows, the
        // values between them keep their sentinel; k = 0 zeroes only its own positions.
        for &(m, k, n) in &[(3, 5, 4), (8, 16, 16), (2, 0, 3)] {
            let (a, b) = (values(m * k, 3), values(k * n, 4));
            let mut dst = vec![7.0f32; 3 * n * m];
            let off = n; // the middle third of each row
            matmul_into(
                &mut dst[off..],
                (3 * n, 1),
                Mat::strided(&a, m, k, k, 1),
                Mat::new(&b, k, n),
                false,
                Parallelism::None,
            );
            for i in 0..m {
                for j in 0..3 * n {
                    let got = dst[i * 3 * n + j];
                    if (off..off + n).contains(&j) {
                        let want: f64 = (0..k)
                            .map(|l| a[i * k + l] as f64 * b[l * n + j - off] as f64)
                            .sum();
                        assert!((got as f64 - want).abs() < 1e-5 * (1.0 + want.abs()));
                    } else {
                        assert_eq!(got, 7.0, "{m}x{k}x{n}: [{i}, {j}] outside the rows");
                    }
                }
            }
        }
    }

    #[test]
    #[should_panic(expected = "matmul")]
    fn matmul_into_refuses_overlapping_rows() {
        let a = vec![1.0f32; 4];
        let mut dst = vec![0.0f32; 8];
        // rows 1 apart but 2 wide: they would overlap
        matmul_into(
            &mut dst,
            (1, 1),
            Mat::new(&a, 2, 2),
            Mat::new(&a, 2, 2),
            false,
            Parallelism::None,
        );
    }

    #[test]
    fn matmul_into_either_destination_layout_and_transpose() {
        // [m, k]·[k, n] against the sum written out, with `b` given as a transposed view (the
        // weight gradient's operand), into a row-major and a column-major destination, with
        // and without accumulation; sizes straddle the GEMM's register tiles.
        for &(m, k, n) in &[(1, 1, 1), (3, 5, 2), (17, 33, 9), (32, 288, 40)] {
            let a = values(m * k, 7);
            let bt = values(n * k, 8); // bᵀ stored row-major [n, k]
            let want = |i: usize, j: usize| -> f64 {
                (0..k)
                    .map(|l| a[i * k + l] as f64 * bt[j * k + l] as f64)
                    .sum()
            };
            let (am, bm) = (Mat::new(&a, m, k), Mat::new(&bt, n, k).t());
            let mut row = vec![0.0f32; m * n];
            matmul_into(&mut row, (n, 1), am, bm, false, Parallelism::None);
            let mut col = vec![1.0f32; m * n]; // accumulates onto ones
            matmul_into(&mut col, (1, m), am, bm, true, Parallelism::None);
            let mut col_t = vec![0.0f32; m * n];
            transpose(&col, n, m, &mut col_t); // column-major [m, n] = row-major [n, m]
            for i in 0..m {
                for j in 0..n {
                    let e = want(i, j);
                    let tol = 1e-5 * (1.0 + e.abs());
                    assert!(
                        (row[i * n + j] as f64 - e).abs() < tol,
                        "row-major {m}x{k}x{n}"
                    );
                    let c = col_t[i * n + j] as f64 - 1.0;
                    assert!((c - e).abs() < tol, "column-major {m}x{k}x{n} [{i},{j}]");
                }
            }
        }
    }

    #[test]
    fn forward_equals_the_definition() {
        for (t, g) in geometries().into_iter().enumerate() {
            let b = 3;
            let x = values(b * g.c_in * g.h * g.w, 1);
            let w = values(g.c_out * g.col_len(), 2);
            let bias = values(g.c_out, 3);
            let y = forward(&g, &x, &w, Some(&bias));
            let want = direct(&g, &x, &w, b);
            assert_eq!(y.len(), want.len(), "case {t}");
            let sp = g.spatial_out();
            for (i, (&a, &e)) in y.iter().zip(&want).enumerate() {
                let e = e + bias[(i / sp.max(1)) % g.c_out] as f64;
                assert!(
                    (a as f64 - e).abs() < 1e-5 * (1.0 + e.abs()),
                    "case {t} [{i}]: {a} vs {e}"
                );
            }
        }
    }

    #[test]
    fn backward_is_the_adjoint_of_the_definition() {
        // L = Σ c ⊙ conv(x, w) is linear in x and in w: ∂L/∂x_j = L(e_j, w)-style sums, i.e.
        // dx = Σ_o c·∂y/∂x computed from the definition column by column.
        for (t, g) in geometries().into_iter().enumerate() {
            let b = 2;
            let (xl, wl) = (g.c_in * g.h * g.w, g.c_out * g.col_len());
            let x = values(b * xl, 4);
            let w = values(wl, 5);
            let c = values(b * g.c_out * g.spatial_out(), 6);
            let (dx, dw) = backward(&g, &x, &w, &c, true, true);
            let (dx, dw) = (dx.unwrap(), dw.unwrap());
            let loss = |x: &[f32], w: &[f32]| -> f64 {
                direct(&g, x, w, b)
                    .iter()
                    .zip(&c)
                    .map(|(y, &c)| y * c as f64)
                    .sum()
            };
            // linear in each argument: the derivative is L(unit vector) exactly
            for j in 0..b * xl {
                let mut e = vec![0.0f32; b * xl];
                e[j] = 1.0;
                let want = loss(&e, &w);
                assert!(
                    (dx[j] as f64 - want).abs() < 1e-5 * (1.0 + want.abs()),
                    "case {t} dx[{j}]"
                );
            }
            for j in 0..wl {
                let mut e = vec![0.0f32; wl];
                e[j] = 1.0;
                let want = loss(&x, &e);
                assert!(
                    (dw[j] as f64 - want).abs() < 1e-5 * (1.0 + want.abs()),
                    "case {t} dw[{j}]"
                );
            }
            // skipping one gradient leaves the other unchanged
            let (only_dx, none) = backward(&g, &x, &w, &c, true, false);
            assert!(none.is_none());
            assert_eq!(only_dx.unwrap(), dx);
        }
    }

    /// The scratch buffers are reused with whatever the last call left in them: poisoned with
    /// NaN first, every geometry still matches the definition (padding entries are rewritten),
    /// and a call made while this thread's scratch is in use gets fresh buffers.
    #[test]
    fn reused_scratch_contents_never_leak_into_results() {
        for (t, g) in geometries().into_iter().enumerate() {
            let b = 2;
            let x = values(b * g.c_in * g.h * g.w, 12);
            let w = values(g.c_out * g.col_len(), 13);
            let n = 4 * g.col_len() * g.spatial_out() + 64;
            with_scratch(n, n, |a, c| {
                a.fill(f32::NAN);
                c.fill(f32::NAN);
            });
            let y = forward(&g, &x, &w, None);
            let want = direct(&g, &x, &w, b);
            for (i, (&a, &e)) in y.iter().zip(&want).enumerate() {
                assert!(
                    (a as f64 - e).abs() < 1e-5 * (1.0 + e.abs()),
                    "case {t} [{i}]: {a} vs {e}"
                );
            }
            let c = values(y.len(), 14);
            with_scratch(n, n, |a, d| {
                a.fill(f32::NAN);
                d.fill(f32::NAN);
            });
            let (dx, dw) = backward(&g, &x, &w, &c, true, true);
            assert!(
                dx.unwrap()
                    .iter()
                    .chain(&dw.unwrap())
                    .all(|v| v.is_finite()),
                "case {t}"
            );
            // nested: this thread's scratch is borrowed, the inner call allocates its own
            let nested = with_scratch(8, 8, |_, _| forward(&g, &x, &w, None));
            assert_eq!(nested, y, "case {t}: nested call");
        }
    }

    #[test]
    fn every_thread_split_gives_the_same_values() {
        // 1 thread (all serial), 3 threads with batch 2 (GEMM-parallel), 2 threads with
        // batch 2 (samples in parallel, per-thread weight-gradient sums reduced).
        let g = geometries()[1];
        let b = 2;
        let x = values(b * g.c_in * g.h * g.w, 9);
        let w = values(g.c_out * g.col_len(), 10);
        let c = values(b * g.c_out * g.spatial_out(), 11);
        let run = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            pool.install(|| {
                assert_eq!(split(b).0, threads > 1 && b >= threads);
                let y = forward(&g, &x, &w, None);
                let (dx, dw) = backward(&g, &x, &w, &c, true, true);
                (y, dx.unwrap(), dw.unwrap())
            })
        };
        let serial = run(1);
        for threads in [2, 3] {
            let other = run(threads);
            assert_eq!(serial.0, other.0, "y, {threads} threads");
            assert_eq!(serial.1, other.1, "dx, {threads} threads");
            for (a, e) in serial.2.iter().zip(&other.2) {
                assert!(
                    (a - e).abs() <= 1e-6 * (1.0 + e.abs()),
                    "dw, {threads} threads"
                );
            }
        }
    }

    #[test]
    fn im2col_and_col2im_are_adjoint() {
        // ⟨im2col(x), c⟩ = ⟨x, col2im(c)⟩ for every geometry
        for g in geometries() {
            let x = values(g.c_in * g.h * g.w, 7);
            let c = values(g.col_len() * g.spatial_out(), 8);
            let mut col = vec![f32::NAN; c.len()];
            im2col(&g, &x, &mut col);
            assert!(col.iter().all(|v| v.is_finite()), "every entry written");
            let mut back = vec![0.0f32; x.len()];
            col2im(&g, &c, &mut back);
            let lhs: f64 = col.iter().zip(&c).map(|(&a, &b)| a as f64 * b as f64).sum();
            let rhs: f64 = x
                .iter()
                .zip(&back)
                .map(|(&a, &b)| a as f64 * b as f64)
                .sum();
            assert!(
                (lhs - rhs).abs() < 1e-4 * (1.0 + lhs.abs()),
                "{g:?}: {lhs} vs {rhs}"
            );
        }
    }
}
