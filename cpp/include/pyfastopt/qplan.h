// qplan.h -- the executors of the one-call int8 run plans, below the bindings (as
// ARCHITECTURE.md's layers): QGraphExec, an imported int8 ONNX graph lowered by
// pyfastopt/onnx/_qlower.py (binding: register_qgraph.cpp, QGraphPlan), and QCNNExec, a
// chain of int8 channels-last layers for pyfastopt.quant.QuantizedCNN and the conv chains
// of pyfastopt.onnx (binding: register_qconv.cpp, QCNNPlan). The bindings validate every
// constant and shape and build the steps; execute() is plain C++ over raw pointers, run
// with the GIL released (cpp/kernels/qplan/qplan_driver.cpp).
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "pyfastopt/qconv.h"
#include "pyfastopt/qgemm.h"

namespace pyfastopt {
namespace qplan {

using sz = std::size_t;

// ---- QGraphExec ---------------------------------------------------------------------------
enum Kind : int {
  kQuant = 0,      // f32 -> 8-bit, per tensor (NaN -> the type's minimum, ONNX Runtime's)
  kDynQuant = 1,   // f32 -> uint8, DynamicQuantizeLinear (scale, zero point kept per call)
  kGemm = 2,       // 8-bit (rows x K) times packed B -> u8 / i8 / f32 output stage
  kConv = 3,       // NHWC uint8 convolution, requantized to uint8
  kMaxPool = 4,    // NHWC 8-bit max pool
  kLut = 5,        // per-channel table, channels last
  kToNHWC = 6,     // (N, C, H, W) -> (N, H, W, C), bytes
  kToNCHW = 7,     // (N, H, W, C) -> (N, C, H, W), bytes
  kDequant = 8,    // 8-bit -> f32, per tensor
};

struct Value {  // value 0: the float input (no buffer)
  bool f32 = false;
  sz per_sample = 0;  // elements per batch entry
  std::vector<float> f;
  std::vector<std::uint8_t> u;
};

struct Op {
  int kind = 0;
  int in = 0, out = 0;
  // quant / dequant: scale, zero point, signedness of the 8-bit side
  float scale = 1.0f;
  std::int32_t zp = 0;
  bool sgn = false;
  // dynamic quantization: its slot (scale, zp) used by later gemms
  int slot = -1;
  // gemm: rows of the value are (batch * per_sample / K)
  sz K = 0, Nc = 0;
  std::vector<std::int8_t> b;  // K x Nc (row-major as given: element (k, n) at b[k*brs + n*bcs])
  std::ptrdiff_t brs = 0, bcs = 1;
  bool b_unsigned = false, a_signed = false;
  PackedB pb;
  std::int32_t za = 0, zb = 0;
  int za_slot = -1;                // zero point (and scale) from a dynamic quantization
  QOutKind okind = QOutKind::f32;
  std::vector<float> col_scale;    // f32 / u8 / i8 multiplier, or (dynamic) the weight scales
  std::vector<std::int32_t> col_bias;
  std::vector<float> bias;
  bool relu = false;
  std::int32_t out_zp = 0;
  // conv / pool / transposes / table (per sample, NHWC)
  sz H = 0, W = 0, C = 0, OH = 0, OW = 0, Co = 0;
  QConvWeights w;
  sz sh = 1, sw = 1, pt = 0, pl = 0, dh = 1, dw = 1, kh = 1, kw = 1;
  std::int32_t zx = 0, zy = 0;
  std::vector<std::uint8_t> lut;
};

struct Slot {
  float scale = 1.0f;
  std::int32_t zp = 0;
};

// DynamicQuantizeLinear's scalars (see qplan_driver.cpp); false for a non-finite input or
// a range that float32 cannot hold.
bool dyn_qparams(const float* x, sz n, float* scale, std::int32_t* zp);

struct QGraphExec {
  std::vector<Value> vals;
  std::vector<Op> ops;
  std::vector<Slot> slots;
  std::vector<float> scale_tmp;
  sz nslots = 0;
  sz n_batch = 0;  // the batch size the buffers are sized for
  int out_value = -1;  // the output value: written to the caller's y
  // Runs every op on x (N samples of vals[0].per_sample floats), the output value into y
  // (its element type, N * per_sample); false when a dynamic quantization met a
  // non-finite input (nothing else fails). Not thread-safe (the caller locks).
  bool execute(const float* x, sz N, void* y);
};

// ---- QCNNExec -----------------------------------------------------------------------------
struct PlanStep {
  int kind = 0;  // 0 conv, 1 pool, 2 push the current tensor (residual begin), 3 residual add,
                 // 4 per-channel table y = lut[c][x]
  sz H = 0, W = 0, C = 0, OH = 0, OW = 0, Co = 0;  // per-sample input / output shape
  // conv
  QConvWeights w;
  sz sh = 1, sw = 1, pt = 0, pl = 0, dh = 1, dw = 1;
  std::int32_t zx = 0, zw = 0, zy = 0;
  std::vector<float> scale;
  std::vector<std::int32_t> qbias;
  bool relu = false;
  // pool
  int pkind = 0;
  sz kh = 1, kw = 1, ph = 0, pw = 0;
  bool include_pad = false;
  long long divisor = 0;
  // residual add: y = sat(rint((a - za) * ma) + rint((b - zb) * mb) + zy)
  std::int32_t za = 0, zb = 0;
  float ma = 0.0f, mb = 0.0f;
  // table: lut[c * 256 + v]
  std::vector<std::uint8_t> lut;
};

struct CNNBuffer {
  std::vector<std::uint8_t> data;
  sz H = 0, W = 0, C = 0;
};

struct QCNNExec {
  sz in_h = 0, in_w = 0, in_c = 0;  // per-sample input (NHWC)
  std::vector<PlanStep> steps;
  std::vector<CNNBuffer> bufs;  // one per step, sized by the binding (shape checks) for N
  // Runs the steps on x (N samples of H x W x C bytes); returns the last step's buffer
  // (x when there are no steps). Not thread-safe (the caller locks).
  const std::uint8_t* execute(const std::uint8_t* x, sz N);
};

}  // namespace qplan
}  // namespace pyfastopt
