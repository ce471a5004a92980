// bind_ops.cpp -- the CUDA module's functions other than the optimizers: validation of
// device arrays (device_array.h), then the GIL is released around the launches.
//
// Every function takes `stream` (a raw cudaStream_t as an integer, resolved in Python)
// and `out` where the CPU API offers it (None -> a new DeviceArray result). The Python
// layer (pyfastopt/cuda/) validates the scalars with the CPU API's own checks and turns
// DeviceArray results into the input's kind.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "bind.h"
#include "cublaslt.h"
#include "device_array.h"
#include "kernels.h"

namespace pyfastopt {
namespace cuda {

namespace {

namespace py = pybind11;

void require_float(const DevArray& a) { require_dtype(a, {DT::f32, DT::f64}); }

// `out=`: in place, the given shape and dtype.
DevArray out_array(Call& call, py::handle out, const std::vector<std::int64_t>& shape, DT dtype) {
  DevArray o = call.inplace(out, "out");
  if (o.dtype != dtype)
    type_error(std::string("out must have dtype ") + dt_name(dtype) + ", got " + dt_name(o.dtype));
  if (o.shape != shape)
    value_error("out must have shape " + shape_str(shape) + ", got " + o.shape_str());
  return o;
}

// The result: `out` (returns None: Python hands back the caller's object) or a new array.
struct Result {
  DevArray arr;
  py::object obj = py::none();
};
Result make_output(Call& call, py::handle out, const std::vector<std::int64_t>& shape, DT dtype) {
  Result r;
  if (!out.is_none()) {
    r.arr = out_array(call, out, shape, dtype);
  } else {
    // allocated after begin(): the device is current
    r.arr.shape = shape;
    r.arr.dtype = dtype;
    r.arr.size = -2;  // marker: allocate later
  }
  return r;
}
void allocate(Call& call, Result& r, const char* name) {
  if (r.arr.size != -2) return;
  DeviceArrayObj a = make_result(r.arr.shape, r.arr.dtype, call.device(), call.raw_stream());
  r.arr = as_devarray(a, name);
  r.obj = py::cast(a);
}

std::int64_t prod(const std::vector<std::int64_t>& v, std::size_t from, std::size_t to) {
  std::int64_t p = 1;
  for (std::size_t i = from; i < to; ++i) p *= v[i];
  return p;
}

// ---------------------------------------------------------------------------- axpby_
void axpby_binding(py::handle y_obj, py::handle x_obj, double a, double b, std::uintptr_t stream) {
  Call call(stream);
  DevArray y = call.inplace(y_obj, "y");
  require_float(y);
  DevArray x = call.input(x_obj, "x");
  require_same_dtype(y, x);
  require_same_shape(y, x);
  detach_overlapping(call, {&x}, {&y});
  call.begin();
  x = call.contiguous(x);
  py::gil_scoped_release nogil;
  if (y.dtype == DT::f32)
    axpby<float>(y.ptr<float>(), x.ptr<float>(), float(a), float(b), y.size, call.stream());
  else
    axpby<double>(y.ptr<double>(), x.ptr<double>(), a, b, y.size, call.stream());
}

// ---------------------------------------------------------------------------- dropout
py::tuple dropout_binding(py::handle x_obj, py::handle out, double p, std::uint64_t seed,
                          std::uint64_t offset, bool want_mask, const std::string& xname,
                          std::uintptr_t stream) {
  Call call(stream);
  DevArray x = call.input(x_obj, xname.c_str());
  require_float(x);
  Result y = make_output(call, out, x.shape, x.dtype);
  if (!out.is_none()) detach_overlapping(call, {&x}, {&y.arr});  // out == x is fine
  call.begin();
  x = call.contiguous(x);
  allocate(call, y, "y");
  py::object bits_obj = py::none();
  std::uint8_t* bits = nullptr;
  if (want_mask) {
    DeviceArrayObj b = make_result({(x.size + 7) / 8}, DT::u8, call.device(), stream);
    bits = reinterpret_cast<std::uint8_t*>(b.data());
    bits_obj = py::cast(b);
  }
  const DropoutParams prm = make_dropout_params(p, seed, offset);
  {
    py::gil_scoped_release nogil;
    if (x.dtype == DT::f32)
      dropout<float>(x.ptr<float>(), y.arr.ptr<float>(), bits, x.size, prm, call.stream());
    else
      dropout<double>(x.ptr<double>(), y.arr.ptr<double>(), bits, x.size, prm, call.stream());
  }
  return py::make_tuple(y.obj, bits_obj);
}

// ---------------------------------------------------------------------------- quant
QuantShape quant_shape(const DevArray& x, long axis) {
  if (axis < 0) return QuantShape{1, 1, static_cast<std::size_t>(x.size)};
  const std::size_t ax = static_cast<std::size_t>(axis);
  return QuantShape{static_cast<std::size_t>(prod(x.shape, 0, ax)),
                    static_cast<std::size_t>(x.shape[ax]),
                    static_cast<std::size_t>(prod(x.shape, ax + 1, x.shape.size()))};
}

template <class T>
Scratch upload_as(Call& call, const std::vector<double>& v) {
  std::vector<T> t(v.begin(), v.end());
  return upload(t.data(), t.size(), call.stream());
}

py::object quantize_binding(py::handle x_obj, const std::vector<double>& scales,
                            const std::vector<double>& zps, const std::string& qdtype, long axis,
                            py::handle out, std::uintptr_t stream) {
  Call call(stream);
  DevArray x = call.input(x_obj, "x");
  require_float(x);
  const DT qdt = qdtype == "uint8" ? DT::u8 : DT::i8;
  if (axis >= static_cast<long>(x.shape.size())) value_error("axis out of range");
  const QuantShape qs = quant_shape(x, axis);
  if (scales.size() != qs.channels || zps.size() != qs.channels)
    value_error("scale / zero_point must have one value per channel");
  Result q = make_output(call, out, x.shape, qdt);
  if (!out.is_none()) detach_overlapping(call, {&x}, {&q.arr});
  call.begin();
  x = call.contiguous(x);
  allocate(call, q, "q");
  const bool f64 = x.dtype == DT::f64;
  // scale and zero point rounded to x's type first (quant.h)
  Scratch s = f64 ? upload_as<double>(call, scales) : upload_as<float>(call, scales);
  Scratch z = f64 ? upload_as<double>(call, zps) : upload_as<float>(call, zps);
  {
  py::gil_scoped_release nogil;
  if (f64) {
    if (qdt == DT::i8)
      quantize<double, std::int8_t>(x.ptr<double>(), q.arr.ptr<std::int8_t>(), qs, s.as<double>(), z.as<double>(), call.stream());
    else
      quantize<double, std::uint8_t>(x.ptr<double>(), q.arr.ptr<std::uint8_t>(), qs, s.as<double>(), z.as<double>(), call.stream());
  } else {
    if (qdt == DT::i8)
      quantize<float, std::int8_t>(x.ptr<float>(), q.arr.ptr<std::int8_t>(), qs, s.as<float>(), z.as<float>(), call.stream());
    else
      quantize<float, std::uint8_t>(x.ptr<float>(), q.arr.ptr<std::uint8_t>(), qs, s.as<float>(), z.as<float>(), call.stream());
  }
  }
  return q.obj;
}

py::object dequantize_binding(py::handle q_obj, const std::vector<double>& scales,
                              const std::vector<double>& zps, long axis, py::handle out,
                              std::uintptr_t stream) {
  Call call(stream);
  DevArray q = call.input(q_obj, "q");
  require_dtype(q, {DT::i8, DT::u8});
  if (axis >= static_cast<long>(q.shape.size())) value_error("axis out of range");
  const QuantShape qs = quant_shape(q, axis);
  if (scales.size() != qs.channels || zps.size() != qs.channels)
    value_error("scale / zero_point must have one value per channel");
  Result y = make_output(call, out, q.shape, DT::f32);
  if (!out.is_none()) detach_overlapping(call, {&q}, {&y.arr});
  call.begin();
  q = call.contiguous(q);
  allocate(call, y, "y");
  Scratch s = upload_as<float>(call, scales), z = upload_as<float>(call, zps);
  {
    py::gil_scoped_release nogil;
    if (q.dtype == DT::i8)
      dequantize<std::int8_t>(q.ptr<std::int8_t>(), y.arr.ptr<float>(), qs, s.as<float>(), z.as<float>(), call.stream());
    else
      dequantize<std::uint8_t>(q.ptr<std::uint8_t>(), y.arr.ptr<float>(), qs, s.as<float>(), z.as<float>(), call.stream());
  }
  return y.obj;
}

// ---------------------------------------------------------------------------- matmul / linear
// A matrix operand for cuBLASLt: pointer, leading dimension and whether it is transposed.
struct MatView {
  const char* ptr;
  std::int64_t ld;
  bool trans;
};

// View (rows, cols) with element strides (rs, cs) as a normal (unit column stride) or
// transposed (unit row stride) row-major matrix with a valid leading dimension; false
// when neither exists (then the caller copies). Strides of size-1 axes are irrelevant.
bool mat_view(std::int64_t rows, std::int64_t cols, std::int64_t rs, std::int64_t cs, MatView* v) {
  if (rows == 1 && cols == 1) {
    *v = {nullptr, 1, false};
    return true;
  }
  if (rows == 1) {
    if (cs == 1) *v = {nullptr, cols, false};
    else if (cs > 1) *v = {nullptr, cs, true};
    else return false;
    return true;
  }
  if (cols == 1) {
    if (rs == 1) *v = {nullptr, rows, true};
    else if (rs > 1) *v = {nullptr, rs, false};
    else return false;
    return true;
  }
  if (cs == 1 && rs >= cols) {
    *v = {nullptr, rs, false};
    return true;
  }
  if (rs == 1 && cs >= rows) {
    *v = {nullptr, cs, true};
    return true;
  }
  return false;
}

// Batched product on matrices given with batch offsets (elements).
void run_gemm(bool f64, std::int64_t M, std::int64_t N, std::int64_t K, const MatView& a,
              const MatView& b, char* c, const std::vector<std::int64_t>& off_a,
              const std::vector<std::int64_t>& off_b, const void* bias, int act, Stream s) {
  const std::int64_t es = f64 ? 8 : 4;
  const std::int64_t batch = static_cast<std::int64_t>(off_a.size());
  auto linear_offsets = [](const std::vector<std::int64_t>& o, std::int64_t* stride) {
    *stride = o.size() > 1 ? o[1] - o[0] : 0;
    for (std::size_t k = 0; k < o.size(); ++k)
      if (o[k] != o[0] + static_cast<std::int64_t>(k) * *stride) return false;
    return true;
  };
  lt::Gemm g;
  g.f64 = f64;
  g.M = M;
  g.N = N;
  g.K = K;
  g.lda = a.ld;
  g.a_trans = a.trans;
  g.ldb = b.ld;
  g.b_trans = b.trans;
  g.ldc = N;
  g.bias = bias;
  const bool relu = act == 1;
  g.epi = bias ? (relu ? lt::Epilogue::relu_bias : lt::Epilogue::bias)
               : (relu ? lt::Epilogue::relu : lt::Epilogue::none);
  std::int64_t sa = 0, sb = 0;
  const bool uniform = linear_offsets(off_a, &sa) && linear_offsets(off_b, &sb);
  auto one = [&](std::int64_t first, std::int64_t count, std::int64_t stride_a, std::int64_t stride_b) {
    g.a = a.ptr + off_a[first] * es;
    g.b = b.ptr + off_b[first] * es;
    g.c = c + first * M * N * es;
    g.batch = count;
    g.stride_a = stride_a;
    g.stride_b = stride_b;
    g.stride_c = M * N;
    try {
      lt::gemm(g, s);
    } catch (const std::runtime_error& e) {
      if (g.epi == lt::Epilogue::none) throw;
      // no algorithm with the fused epilogue (e.g. float64 on some GPUs): plain GEMM,
      // then the epilogue kernel
      lt::Gemm plain = g;
      plain.epi = lt::Epilogue::none;
      plain.bias = nullptr;
      lt::gemm(plain, s);
      for (std::int64_t k = 0; k < count; ++k) {
        char* ck = static_cast<char*>(plain.c) + k * M * N * es;
        if (f64)
          bias_act<double>(reinterpret_cast<double*>(ck), static_cast<const double*>(bias), M, N, act == 2 ? 0 : act, s);
        else
          bias_act<float>(reinterpret_cast<float*>(ck), static_cast<const float*>(bias), M, N, act == 2 ? 0 : act, s);
      }
    }
  };
  if (uniform && batch < (std::int64_t(1) << 31)) {
    one(0, batch, sa, sb);
  } else {
    for (std::int64_t k = 0; k < batch; ++k) one(k, 1, 0, 0);
  }
  if (act == 2) {  // exact-erf gelu after the (bias) epilogue
    if (f64)
      bias_act<double>(reinterpret_cast<double*>(c), nullptr, batch * M, N, 2, s);
    else
      bias_act<float>(reinterpret_cast<float*>(c), nullptr, batch * M, N, 2, s);
  }
}

void fill_k0(bool f64, char* c, std::int64_t rows, std::int64_t N, const void* bias, int act, Stream s) {
  check(cudaMemsetAsync(c, 0, static_cast<std::size_t>(rows * N) * (f64 ? 8 : 4), s), "cudaMemsetAsync");
  if (f64)
    bias_act<double>(reinterpret_cast<double*>(c), static_cast<const double*>(bias), rows, N, act, s);
  else
    bias_act<float>(reinterpret_cast<float*>(c), static_cast<const float*>(bias), rows, N, act, s);
}

py::object matmul_binding(py::handle a_obj, py::handle b_obj, py::handle out, std::uintptr_t stream) {
  Call call(stream);
  DevArray a = call.input(a_obj, "a");
  DevArray b = call.input(b_obj, "b");
  require_float(a);
  require_float(b);
  // NumPy's promotion: float32 with float64 gives float64
  const DT rdt = (a.dtype == DT::f64 || b.dtype == DT::f64) ? DT::f64 : DT::f32;
  if (a.shape.empty() || b.shape.empty())
    value_error("matmul: a and b must have at least one dimension (0-d operands are not allowed, as in numpy.matmul)");
  // numpy.matmul: 1-D a is a row (1, K) and its axis is dropped; 1-D b a column (K, 1).
  const bool a1 = a.shape.size() == 1, b1 = b.shape.size() == 1;
  std::vector<std::int64_t> ash = a.shape, bsh = b.shape;
  if (a1) ash.insert(ash.begin(), 1);
  if (b1) bsh.push_back(1);
  const std::int64_t M = ash[ash.size() - 2], K = ash.back(), N = bsh.back();
  if (bsh[bsh.size() - 2] != K)
    value_error("matmul: a with shape " + a.shape_str() + " and b with shape " + b.shape_str() +
                " have different inner dimensions (" + std::to_string(K) + " vs " +
                std::to_string(bsh[bsh.size() - 2]) + ")");
  // broadcast batch dimensions
  const std::size_t ba = ash.size() - 2, bb = bsh.size() - 2, nb = ba > bb ? ba : bb;
  std::vector<std::int64_t> batch(nb);
  for (std::size_t i = 0; i < nb; ++i) {
    const std::int64_t da = i + ba >= nb ? ash[i + ba - nb] : 1;
    const std::int64_t db = i + bb >= nb ? bsh[i + bb - nb] : 1;
    if (da != db && da != 1 && db != 1)
      value_error("matmul: the batch dimensions of a " + a.shape_str() + " and b " + b.shape_str() +
                  " do not broadcast");
    batch[i] = da > db ? da : db;
  }
  std::vector<std::int64_t> oshape = batch;
  if (!a1) oshape.push_back(M);
  if (!b1) oshape.push_back(N);
  Result c = make_output(call, out, oshape, rdt);
  if (!out.is_none()) detach_overlapping(call, {&a, &b}, {&c.arr});
  call.begin();
  allocate(call, c, "out");
  if (rdt == DT::f64) {
    a = call.promoted_f64(a);
    b = call.promoted_f64(b);
  }
  const std::int64_t nbatch = prod(batch, 0, batch.size());
  if (nbatch == 0 || M == 0 || N == 0) return c.obj;
  const bool f64 = rdt == DT::f64;
  if (K == 0) {
    fill_k0(f64, c.arr.data, nbatch * M, N, nullptr, 0, call.stream());
    return c.obj;
  }
  // Strides (elements) of the matrices and of the broadcast batch axes (0 where an
  // operand is broadcast); read after detach_overlapping, which may have copied a or b.
  std::vector<std::int64_t> ast, bst, sa(nb, 0), sb(nb, 0);
  auto strides_of = [&](const DevArray& x, bool one_d, bool is_a, std::vector<std::int64_t>* st,
                        std::vector<std::int64_t>* sbatch) {
    *st = x.strides;
    if (one_d) {
      if (is_a) st->insert(st->begin(), 0);
      else st->push_back(0);
    }
    const std::vector<std::int64_t>& sh = is_a ? ash : bsh;
    const std::size_t base = is_a ? ba : bb;
    for (std::size_t i = 0; i < nb; ++i)
      (*sbatch)[i] = (i + base >= nb && sh[i + base - nb] != 1) ? (*st)[i + base - nb] : 0;
  };
  strides_of(a, a1, true, &ast, &sa);
  strides_of(b, b1, false, &bst, &sb);
  MatView va{}, vb{};
  // A matrix view needs a unit stride; otherwise work on a contiguous copy of the operand.
  if (!mat_view(M, K, ast[ast.size() - 2], ast.back(), &va)) {
    a = call.private_copy(a);
    strides_of(a, a1, true, &ast, &sa);
    mat_view(M, K, ast[ast.size() - 2], ast.back(), &va);
  }
  if (!mat_view(K, N, bst[bst.size() - 2], bst.back(), &vb)) {
    b = call.private_copy(b);
    strides_of(b, b1, false, &bst, &sb);
    mat_view(K, N, bst[bst.size() - 2], bst.back(), &vb);
  }
  va.ptr = a.data;
  vb.ptr = b.data;
  // per-batch offsets (elements)
  std::vector<std::int64_t> oa(nbatch), ob(nbatch);
  for (std::int64_t k = 0; k < nbatch; ++k) {
    std::int64_t rem = k, xa = 0, xb = 0;
    for (int i = static_cast<int>(nb) - 1; i >= 0; --i) {
      const std::int64_t idx = rem % batch[i];
      rem /= batch[i];
      xa += idx * sa[i];
      xb += idx * sb[i];
    }
    oa[k] = xa;
    ob[k] = xb;
  }
  {
    py::gil_scoped_release nogil;
    run_gemm(f64, M, N, K, va, vb, c.arr.data, oa, ob, nullptr, 0, call.stream());
  }
  return c.obj;
}

py::object linear_binding(py::handle x_obj, py::handle w_obj, py::handle bias_obj, int act,
                          py::handle out, std::uintptr_t stream) {
  Call call(stream);
  DevArray x = call.input(x_obj, "x");
  require_float(x);
  DevArray w = call.input(w_obj, "weight");
  require_float(w);
  if (x.shape.empty()) value_error("linear: x must have at least one dimension");
  if (w.shape.size() != 2)
    value_error("linear: weight must be 2-D (out_features, in_features), got shape " + w.shape_str());
  const std::int64_t K = x.shape.back(), N = w.shape[0];
  if (w.shape[1] != K)
    value_error("linear: x with shape " + x.shape_str() + " has " + std::to_string(K) +
                " features but weight with shape " + w.shape_str() + " expects " +
                std::to_string(w.shape[1]));
  DevArray bias = call.optional_input(bias_obj, "bias");
  if (bias.size >= 0) {
    require_float(bias);
    if (bias.shape != std::vector<std::int64_t>{N})
      value_error("linear: bias must have shape (" + std::to_string(N) + ",), got " + bias.shape_str());
  }
  std::vector<std::int64_t> oshape(x.shape.begin(), x.shape.end() - 1);
  oshape.push_back(N);
  // NumPy's promotion: float64 if any operand is
  const DT rdt = (x.dtype == DT::f64 || w.dtype == DT::f64 || (bias.size >= 0 && bias.dtype == DT::f64))
                     ? DT::f64 : DT::f32;
  Result y = make_output(call, out, oshape, rdt);
  if (!out.is_none()) {
    std::vector<DevArray*> ins{&x, &w};
    if (bias.size >= 0) ins.push_back(&bias);
    detach_overlapping(call, ins, {&y.arr});
  }
  call.begin();
  allocate(call, y, "out");
  const std::int64_t M = prod(x.shape, 0, x.shape.size() - 1);
  if (M == 0 || N == 0) return y.obj;
  const bool f64 = rdt == DT::f64;
  if (f64) {
    x = call.promoted_f64(x);
    w = call.promoted_f64(w);
    bias = call.promoted_f64(bias);
  }
  if (bias.size >= 0) bias = call.contiguous(bias);
  const void* bp = bias.size >= 0 ? bias.data : nullptr;
  if (K == 0) {
    fill_k0(f64, y.arr.data, M, N, bp, act, call.stream());
    return y.obj;
  }
  x = call.contiguous(x);
  MatView vx{x.data, K, false}, vw{};
  if (w.c_contiguous()) {
    vw = {w.data, K, true};  // (N, K): op(B) = W^T
  } else if (w.strides[0] == 1 && w.strides[1] >= N) {
    vw = {w.data, w.strides[1], false};  // W^T is a row-major (K, N) view
  } else {
    w = call.private_copy(w);
    vw = {w.data, K, true};
  }
  std::vector<std::int64_t> zero{0};
  {
    py::gil_scoped_release nogil;
    run_gemm(f64, M, N, K, vx, vw, y.arr.data, zero, zero, bp, act, call.stream());
  }
  return y.obj;
}

// ---------------------------------------------------------------------------- matmul_int8
py::tuple matmul_int8_binding(py::handle a_obj, long za, py::handle b_obj, long zb, bool use_lt,
                              std::uintptr_t stream) {
  Call call(stream);
  DevArray a = call.input(a_obj, "a_q");
  DevArray b = call.input(b_obj, "b_q");
  require_dtype(a, {DT::i8, DT::u8});
  require_dtype(b, {DT::i8, DT::u8});
  if (a.shape.empty() || a.shape.size() > 2 || b.shape.empty() || b.shape.size() > 2)
    value_error("matmul_int8 takes 1-D or 2-D operands, got a_q " + a.shape_str() + " and b_q " +
                b.shape_str());
  const bool a1 = a.shape.size() == 1, b1 = b.shape.size() == 1;
  const std::int64_t M = a1 ? 1 : a.shape[0], K = a.shape.back();
  const std::int64_t Kb = b.shape[0], N = b1 ? 1 : b.shape[1];
  if (K != Kb)
    value_error("matmul_int8: a_q with shape " + a.shape_str() + " and b_q with shape " +
                b.shape_str() + " have different inner dimensions");
  std::vector<std::int64_t> oshape;
  if (!a1) oshape.push_back(M);
  if (!b1) oshape.push_back(N);
  call.begin();
  DeviceArrayObj c = make_result(oshape, DT::i32, call.device(), stream);
  QgemmArgs q{};
  q.a = a.data;
  q.a_signed = a.dtype == DT::i8;
  q.a_rs = a1 ? 0 : a.strides[0];
  q.a_cs = a.strides.back();
  q.za = static_cast<std::int32_t>(za);
  q.b = b.data;
  q.b_signed = b.dtype == DT::i8;
  q.b_rs = b.strides[0];
  q.b_cs = b1 ? 0 : b.strides[1];
  q.zb = static_cast<std::int32_t>(zb);
  q.c = reinterpret_cast<std::int32_t*>(c.data());
  q.M = M;
  q.N = N;
  q.K = K;
  const char* path;
  {
    py::gil_scoped_release nogil;
    path = matmul_int8(q, use_lt, call.stream());
  }
  return py::make_tuple(py::cast(c), path);
}

// ---------------------------------------------------------------------------- batch norm
struct Layout {
  BnDims dims;
  long axis;
};

Layout layout_of(const DevArray& x, long axis) {
  const long nd = static_cast<long>(x.shape.size());
  const long ax = axis < 0 ? axis + nd : axis;
  if (ax < 0 || ax >= nd)
    value_error("axis " + std::to_string(axis) + " is out of bounds for " + x.name.str() +
                " with shape " + x.shape_str() + " (" + std::to_string(nd) + " dimension" +
                (nd == 1 ? "" : "s") + ")");
  Layout l{{static_cast<std::size_t>(prod(x.shape, 0, ax)), static_cast<std::size_t>(x.shape[ax]),
            static_cast<std::size_t>(prod(x.shape, ax + 1, x.shape.size()))},
           ax};
  return l;
}

void require_channels(const DevArray& a, const DevArray& x, const Layout& l) {
  if (a.shape.size() != 1 || static_cast<std::size_t>(a.shape[0]) != l.dims.channels)
    value_error(a.name.str() + " must have shape (" + std::to_string(l.dims.channels) +
                ",) (the channels of " + x.name.str() + " with shape " + x.shape_str() +
                " along axis " + std::to_string(l.axis) + "), got " + a.shape_str());
}

// A read-only per-channel argument (float32/float64, (C,)) -> device doubles.
struct PerChannel {
  DevArray arr;
  bool given = false;
};
PerChannel per_channel(Call& call, py::handle obj, const char* name, const DevArray& x,
                       const Layout& l, bool optional) {
  PerChannel p;
  if (optional && obj.is_none()) return p;
  p.arr = call.input(obj, name);
  require_float(p.arr);
  require_channels(p.arr, x, l);
  p.given = true;
  return p;
}
const double* as_doubles(Call& call, const PerChannel& p, std::vector<Scratch>& keep) {
  if (!p.given) return nullptr;
  const DevArray c = call.contiguous(p.arr);
  Scratch s = call.scratch(static_cast<std::size_t>(c.size) * sizeof(double));
  to_double(c.data, c.dtype == DT::f64, s.as<double>(), c.size, call.stream());
  const double* r = s.as<double>();
  keep.push_back(std::move(s));
  return r;
}

py::tuple bn_train_binding(py::handle x_obj, py::handle weight, py::handle bias, py::handle rm_obj,
                           py::handle rv_obj, double factor, double eps, long axis, py::handle out,
                           std::uintptr_t stream) {
  Call call(stream);
  DevArray x = call.input(x_obj, "x");
  require_float(x);
  const Layout l = layout_of(x, axis);
  const std::size_t n = l.dims.outer * l.dims.inner;
  if (n < 2)
    value_error("batch norm in training needs more than 1 value per channel, got x with shape " +
                x.shape_str() + " and axis " + std::to_string(l.axis) + " (" + std::to_string(n) +
                " value" + (n == 1 ? "" : "s") + " per channel)");
  const PerChannel w = per_channel(call, weight, "weight", x, l, true);
  const PerChannel b = per_channel(call, bias, "bias", x, l, true);
  if (rm_obj.is_none() != rv_obj.is_none())
    value_error("running_mean and running_var must both be given or both be None");
  const bool running = !rm_obj.is_none();
  DevArray rm, rv;
  Result y = make_output(call, out, x.shape, x.dtype);
  std::vector<const DevArray*> outs;
  if (!out.is_none()) outs.push_back(&y.arr);
  if (running) {
    rm = call.inplace(rm_obj, "running_mean");
    rv = call.inplace(rv_obj, "running_var");
    require_same_dtype(x, rm);
    require_same_dtype(x, rv);
    require_channels(rm, x, l);
    require_channels(rv, x, l);
    outs.push_back(&rm);
    outs.push_back(&rv);
  }
  require_disjoint(outs);
  detach_overlapping(call, {&x}, outs);
  call.begin();
  x = call.contiguous(x);
  allocate(call, y, "y");
  const std::vector<std::int64_t> cshape{static_cast<std::int64_t>(l.dims.channels)};
  DeviceArrayObj sm = make_result(cshape, x.dtype, call.device(), stream);
  DeviceArrayObj si = make_result(cshape, x.dtype, call.device(), stream);
  std::vector<Scratch> keep;
  const double* wd = as_doubles(call, w, keep);
  const double* bd = as_doubles(call, b, keep);
  {
    py::gil_scoped_release nogil;
    if (x.dtype == DT::f32)
      bn_train<float>(x.ptr<float>(), y.arr.ptr<float>(), l.dims, wd, bd, running ? rm.ptr<float>() : nullptr,
                      running ? rv.ptr<float>() : nullptr, factor, eps, reinterpret_cast<float*>(sm.data()),
                      reinterpret_cast<float*>(si.data()), call.stream());
    else
      bn_train<double>(x.ptr<double>(), y.arr.ptr<double>(), l.dims, wd, bd, running ? rm.ptr<double>() : nullptr,
                       running ? rv.ptr<double>() : nullptr, factor, eps, reinterpret_cast<double*>(sm.data()),
                       reinterpret_cast<double*>(si.data()), call.stream());
  }
  return py::make_tuple(y.obj, py::cast(sm), py::cast(si));
}

py::object bn_infer_binding(py::handle x_obj, py::handle weight, py::handle bias, py::handle rm_obj,
                            py::handle rv_obj, double eps, long axis, py::handle out, std::uintptr_t stream) {
  Call call(stream);
  DevArray x = call.input(x_obj, "x");
  require_float(x);
  const Layout l = layout_of(x, axis);
  const PerChannel w = per_channel(call, weight, "weight", x, l, true);
  const PerChannel b = per_channel(call, bias, "bias", x, l, true);
  const PerChannel rm = per_channel(call, rm_obj, "running_mean", x, l, false);
  const PerChannel rv = per_channel(call, rv_obj, "running_var", x, l, false);
  Result y = make_output(call, out, x.shape, x.dtype);
  if (!out.is_none()) detach_overlapping(call, {&x}, {&y.arr});
  call.begin();
  x = call.contiguous(x);
  allocate(call, y, "y");
  std::vector<Scratch> keep;
  const double* wd = as_doubles(call, w, keep);
  const double* bd = as_doubles(call, b, keep);
  const double* md = as_doubles(call, rm, keep);
  const double* vd = as_doubles(call, rv, keep);
  {
    py::gil_scoped_release nogil;
    if (x.dtype == DT::f32)
      bn_infer<float>(x.ptr<float>(), y.arr.ptr<float>(), l.dims, wd, bd, md, vd, eps, call.stream());
    else
      bn_infer<double>(x.ptr<double>(), y.arr.ptr<double>(), l.dims, wd, bd, md, vd, eps, call.stream());
  }
  return y.obj;
}

py::tuple bn_backward_binding(py::handle dy_obj, py::handle x_obj, py::handle weight, py::handle mean_obj,
                              py::handle invstd_obj, long axis, py::handle out, std::uintptr_t stream) {
  Call call(stream);
  DevArray dy = call.input(dy_obj, "dy");
  DevArray x = call.input(x_obj, "x");
  require_float(x);
  require_same_shape(dy, x);
  require_same_dtype(dy, x);
  const Layout l = layout_of(x, axis);
  const PerChannel w = per_channel(call, weight, "weight", x, l, true);
  const PerChannel sm = per_channel(call, mean_obj, "save_mean", x, l, false);
  const PerChannel si = per_channel(call, invstd_obj, "save_invstd", x, l, false);
  Result dx = make_output(call, out, x.shape, x.dtype);
  if (!out.is_none()) detach_overlapping(call, {&dy, &x}, {&dx.arr});
  call.begin();
  dy = call.contiguous(dy);
  x = call.contiguous(x);
  allocate(call, dx, "dx");
  const std::vector<std::int64_t> cshape{static_cast<std::int64_t>(l.dims.channels)};
  DeviceArrayObj dw = make_result(cshape, x.dtype, call.device(), stream);
  DeviceArrayObj db = make_result(cshape, x.dtype, call.device(), stream);
  std::vector<Scratch> keep;
  const double* wd = as_doubles(call, w, keep);
  const double* md = as_doubles(call, sm, keep);
  const double* id = as_doubles(call, si, keep);
  {
    py::gil_scoped_release nogil;
    if (x.dtype == DT::f32)
      bn_backward<float>(dy.ptr<float>(), x.ptr<float>(), dx.arr.ptr<float>(), l.dims, wd, md, id,
                         reinterpret_cast<float*>(dw.data()), reinterpret_cast<float*>(db.data()), call.stream());
    else
      bn_backward<double>(dy.ptr<double>(), x.ptr<double>(), dx.arr.ptr<double>(), l.dims, wd, md, id,
                          reinterpret_cast<double*>(dw.data()), reinterpret_cast<double*>(db.data()), call.stream());
  }
  return py::make_tuple(dx.obj, py::cast(dw), py::cast(db));
}

// ---------------------------------------------------------------------------- clipping
std::vector<DevArray> inplace_list(Call& call, py::handle seq, const char* name) {
  std::vector<DevArray> v;
  long i = 0;
  for (py::handle h : seq) {
    DevArray a = call.inplace(h, Name(name, i++));
    require_float(a);
    v.push_back(std::move(a));
  }
  std::vector<const DevArray*> ptrs;
  for (const DevArray& a : v) ptrs.push_back(&a);
  require_disjoint(ptrs);
  return v;
}

std::vector<Span> spans(const std::vector<DevArray>& v) {
  std::vector<Span> s;
  for (const DevArray& a : v) s.push_back({a.data, a.size, a.dtype == DT::f64});
  return s;
}

py::object clip_norm_binding(py::handle grads, double max_norm, double norm_type, bool apply,
                             std::uintptr_t stream) {
  Call call(stream);
  std::vector<DevArray> g = inplace_list(call, grads, "grads");
  call.begin();
  DeviceArrayObj total = make_result({}, DT::f64, call.device(), stream);
  Scratch work = call.scratch(4 * sizeof(double));  // value, top, {total, coef}
  double* value = work.as<double>();
  double* top = value + 1;
  double* res = value + 2;
  const std::vector<Span> s = spans(g);
  {
    py::gil_scoped_release nogil;
    const Stream st = call.stream();
    int kind = 2;
    if (norm_type == 2.0) {
      reduce_list(s, Reduce::sumsq, 2.0, nullptr, value, st);
      kind = 0;
    } else if (std::isinf(norm_type)) {
      reduce_list(s, norm_type > 0 ? Reduce::maxabs : Reduce::minabs, 0.0, nullptr, value, st);
    } else if (norm_type == 0.0) {
      reduce_list(s, Reduce::nnz, 0.0, nullptr, value, st);
    } else {
      reduce_list(s, Reduce::maxabs, 0.0, nullptr, top, st);
      reduce_list(s, Reduce::sumpow, norm_type, top, value, st);
      kind = 1;
    }
    norm_finish(value, top, norm_type, kind, max_norm, res, st);
    if (apply) scale_list(s, res, st);
    check(cudaMemcpyAsync(total.data(), res, sizeof(double), cudaMemcpyDeviceToDevice, st),
          "cudaMemcpyAsync");
  }
  return py::cast(total);
}

void clip_value_binding(py::handle grads, double clip, std::uintptr_t stream) {
  Call call(stream);
  std::vector<DevArray> g = inplace_list(call, grads, "grads");
  call.begin();
  py::gil_scoped_release nogil;
  clamp_list(spans(g), -clip, clip, call.stream());
}

// ---------------------------------------------------------------------------- checks
py::dict check_inplace_binding(py::handle obj, const std::string& name, bool float_only) {
  Call call(0);
  DevArray a = call.inplace(obj, name.c_str());
  if (float_only) require_float(a);
  py::dict d;
  d["device"] = a.device;
  d["dtype"] = dt_name(a.dtype);
  d["shape"] = py::cast(a.shape);
  d["data"] = reinterpret_cast<std::uintptr_t>(a.data);
  d["nbytes"] = a.nbytes();
  return d;
}

}  // namespace

void register_ops(py::module_& m) {
  m.def("axpby_", &axpby_binding, py::arg("y"), py::arg("x"), py::arg("a"), py::arg("b"),
        py::arg("stream"));
  m.def("dropout", &dropout_binding, py::arg("x"), py::arg("out"), py::arg("p"), py::arg("seed"),
        py::arg("offset"), py::arg("want_mask"), py::arg("name"), py::arg("stream"));
  m.def("quantize", &quantize_binding, py::arg("x"), py::arg("scales"), py::arg("zero_points"),
        py::arg("dtype"), py::arg("axis"), py::arg("out"), py::arg("stream"));
  m.def("dequantize", &dequantize_binding, py::arg("q"), py::arg("scales"), py::arg("zero_points"),
        py::arg("axis"), py::arg("out"), py::arg("stream"));
  m.def("matmul", &matmul_binding, py::arg("a"), py::arg("b"), py::arg("out"), py::arg("stream"));
  m.def("linear", &linear_binding, py::arg("x"), py::arg("weight"), py::arg("bias"),
        py::arg("activation"), py::arg("out"), py::arg("stream"));
  m.def("matmul_int8", &matmul_int8_binding, py::arg("a_q"), py::arg("a_zero_point"), py::arg("b_q"),
        py::arg("b_zero_point"), py::arg("use_cublaslt"), py::arg("stream"));
  m.def("batch_norm_train", &bn_train_binding, py::arg("x"), py::arg("weight"), py::arg("bias"),
        py::arg("running_mean"), py::arg("running_var"), py::arg("factor"), py::arg("eps"),
        py::arg("axis"), py::arg("out"), py::arg("stream"));
  m.def("batch_norm_infer", &bn_infer_binding, py::arg("x"), py::arg("weight"), py::arg("bias"),
        py::arg("running_mean"), py::arg("running_var"), py::arg("eps"), py::arg("axis"),
        py::arg("out"), py::arg("stream"));
  m.def("batch_norm_backward", &bn_backward_binding, py::arg("dy"), py::arg("x"), py::arg("weight"),
        py::arg("save_mean"), py::arg("save_invstd"), py::arg("axis"), py::arg("out"),
        py::arg("stream"));
  m.def("clip_grad_norm_", &clip_norm_binding, py::arg("grads"), py::arg("max_norm"),
        py::arg("norm_type"), py::arg("apply"), py::arg("stream"));
  m.def("clip_grad_value_", &clip_value_binding, py::arg("grads"), py::arg("clip_value"),
        py::arg("stream"));
  m.def("check_inplace", &check_inplace_binding, py::arg("obj"), py::arg("name"),
        py::arg("float_only") = true);
}

}  // namespace cuda
}  // namespace pyfastopt
