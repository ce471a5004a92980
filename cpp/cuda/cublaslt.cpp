// cublaslt.cpp -- run-time loading of cuBLASLt and the GEMM calls (see cublaslt.h).
#include "cublaslt.h"

#include <dlfcn.h>

#include <cstdlib>
#include <map>
#include <mutex>
#include <new>
#include <stdexcept>
#include <tuple>
#include <vector>

#include "cublaslt_api.h"

namespace pyfastopt {
namespace cuda {
namespace lt {

namespace {

std::mutex g_mu;
bool g_tried = false;
std::string g_why, g_path;
void* g_lib = nullptr;
Api g_api{};
std::vector<std::string> g_dirs;
std::map<int, Handle> g_handles;

const char* status_name(Status s) {
  switch (s) {
    case 0: return "CUBLAS_STATUS_SUCCESS";
    case 1: return "CUBLAS_STATUS_NOT_INITIALIZED";
    case 3: return "CUBLAS_STATUS_ALLOC_FAILED";
    case 7: return "CUBLAS_STATUS_INVALID_VALUE";
    case 8: return "CUBLAS_STATUS_ARCH_MISMATCH";
    case 11: return "CUBLAS_STATUS_MAPPING_ERROR";
    case 13: return "CUBLAS_STATUS_EXECUTION_FAILED";
    case 14: return "CUBLAS_STATUS_INTERNAL_ERROR";
    case 15: return "CUBLAS_STATUS_NOT_SUPPORTED";
    case 16: return "CUBLAS_STATUS_LICENSE_ERROR";
    default: return "unknown cuBLAS status";
  }
}

void lt_check(Status s, const char* what) {
  if (s == kSuccess) return;
  if (s == 3) throw std::bad_alloc();
  throw std::runtime_error(std::string("cuBLASLt error in ") + what + ": " + status_name(s) + " (" +
                           std::to_string(s) + ")");
}

template <class F>
bool sym(void* lib, const char* name, F* out, std::string* why) {
  *out = reinterpret_cast<F>(dlsym(lib, name));
  if (!*out) {
    *why = std::string("libcublasLt lacks ") + name;
    return false;
  }
  return true;
}

bool load_locked() {
  if (g_tried) return g_lib != nullptr;
  g_tried = true;
  std::vector<std::string> candidates;
  if (const char* env = std::getenv("PYFASTOPT_CUBLASLT")) candidates.push_back(env);
  for (const std::string& d : g_dirs) {
    candidates.push_back(d + "/libcublasLt.so.13");
    candidates.push_back(d + "/libcublasLt.so.12");
  }
  for (const char* n : {"libcublasLt.so.13", "libcublasLt.so.12", "libcublasLt.so"}) candidates.push_back(n);
  std::string errors;
  for (const std::string& c : candidates) {
    void* h = dlopen(c.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (h) {
      g_lib = h;
      g_path = c;
      break;
    }
    const char* e = dlerror();
    if (errors.size() < 600) errors += (errors.empty() ? "" : "; ") + std::string(e ? e : c);
  }
  if (!g_lib) {
    g_why = "libcublasLt (cuBLASLt, CUDA 12 or 13) could not be loaded: " + errors +
            " (install the nvidia-cublas wheel or the CUDA toolkit's cuBLAS, or set "
            "PYFASTOPT_CUBLASLT to the library's path)";
    return false;
  }
  std::string why;
  const bool ok = sym(g_lib, "cublasLtCreate", &g_api.Create, &why) &&
                  sym(g_lib, "cublasLtDestroy", &g_api.Destroy, &why) &&
                  sym(g_lib, "cublasLtGetVersion", &g_api.GetVersion, &why) &&
                  sym(g_lib, "cublasLtMatmulDescCreate", &g_api.MatmulDescCreate, &why) &&
                  sym(g_lib, "cublasLtMatmulDescDestroy", &g_api.MatmulDescDestroy, &why) &&
                  sym(g_lib, "cublasLtMatmulDescSetAttribute", &g_api.MatmulDescSetAttribute, &why) &&
                  sym(g_lib, "cublasLtMatrixLayoutCreate", &g_api.MatrixLayoutCreate, &why) &&
                  sym(g_lib, "cublasLtMatrixLayoutDestroy", &g_api.MatrixLayoutDestroy, &why) &&
                  sym(g_lib, "cublasLtMatrixLayoutSetAttribute", &g_api.MatrixLayoutSetAttribute, &why) &&
                  sym(g_lib, "cublasLtMatmulPreferenceCreate", &g_api.MatmulPreferenceCreate, &why) &&
                  sym(g_lib, "cublasLtMatmulPreferenceDestroy", &g_api.MatmulPreferenceDestroy, &why) &&
                  sym(g_lib, "cublasLtMatmulPreferenceSetAttribute", &g_api.MatmulPreferenceSetAttribute, &why) &&
                  sym(g_lib, "cublasLtMatmulAlgoGetHeuristic", &g_api.MatmulAlgoGetHeuristic, &why) &&
                  sym(g_lib, "cublasLtMatmul", &g_api.Matmul, &why);
  if (!ok) {
    g_why = why + " (" + g_path + ")";
    dlclose(g_lib);
    g_lib = nullptr;
    return false;
  }
  return true;
}

const Api& api() {
  std::lock_guard<std::mutex> lock(g_mu);
  if (!load_locked()) throw std::runtime_error("pyfastopt.cuda matmul is unavailable: " + g_why);
  return g_api;
}

Handle handle() {
  int dev = 0;
  check(cudaGetDevice(&dev), "cudaGetDevice");
  const Api& a = api();
  std::lock_guard<std::mutex> lock(g_mu);
  auto it = g_handles.find(dev);
  if (it != g_handles.end()) return it->second;
  Handle h = nullptr;
  lt_check(a.Create(&h), "cublasLtCreate");
  g_handles[dev] = h;  // kept for the process's lifetime
  return h;
}

// RAII wrappers
struct Desc {
  MatmulDesc d = nullptr;
  Desc(int compute, cudaDataType_t scale) { lt_check(g_api.MatmulDescCreate(&d, compute, scale), "cublasLtMatmulDescCreate"); }
  ~Desc() { if (d) g_api.MatmulDescDestroy(d); }
  template <class V>
  void set(int attr, const V& v) { lt_check(g_api.MatmulDescSetAttribute(d, attr, &v, sizeof v), "cublasLtMatmulDescSetAttribute"); }
};
struct Layout {
  MatrixLayout l = nullptr;
  Layout(cudaDataType_t t, std::int64_t rows, std::int64_t cols, std::int64_t ld) {
    lt_check(g_api.MatrixLayoutCreate(&l, t, static_cast<std::uint64_t>(rows), static_cast<std::uint64_t>(cols), ld),
             "cublasLtMatrixLayoutCreate");
  }
  ~Layout() { if (l) g_api.MatrixLayoutDestroy(l); }
  void batch(std::int64_t count, std::int64_t stride) {
    if (count <= 1) return;
    const std::int32_t c = static_cast<std::int32_t>(count);
    lt_check(g_api.MatrixLayoutSetAttribute(l, kLayoutBatchCount, &c, sizeof c), "cublasLtMatrixLayoutSetAttribute");
    lt_check(g_api.MatrixLayoutSetAttribute(l, kLayoutStridedBatchOffset, &stride, sizeof stride),
             "cublasLtMatrixLayoutSetAttribute");
  }
};
struct Pref {
  Preference p = nullptr;
  Pref() { lt_check(g_api.MatmulPreferenceCreate(&p), "cublasLtMatmulPreferenceCreate"); }
  ~Pref() { if (p) g_api.MatmulPreferenceDestroy(p); }
  template <class V>
  void set(int attr, const V& v) { lt_check(g_api.MatmulPreferenceSetAttribute(p, attr, &v, sizeof v), "cublasLtMatmulPreferenceSetAttribute"); }
};

// Largest power of two (<= 256) dividing the address and every batch offset.
std::uint32_t alignment(const void* p, std::int64_t stride_bytes, std::int64_t batch) {
  std::uint64_t a = reinterpret_cast<std::uintptr_t>(p) | 256u;
  if (batch > 1 && stride_bytes) a |= static_cast<std::uint64_t>(stride_bytes < 0 ? -stride_bytes : stride_bytes);
  return static_cast<std::uint32_t>(a & (~a + 1));
}

constexpr std::size_t kWorkspace = 32u << 20;

using Key = std::tuple<int, int, std::int64_t, std::int64_t, std::int64_t, std::int64_t, std::int64_t,
                       std::int64_t, int, int, int, std::int64_t, std::int64_t, std::int64_t,
                       std::int64_t, std::uint32_t, std::uint32_t, std::uint32_t, std::uint32_t>;
std::map<Key, std::pair<bool, HeuristicResult>> g_algos;

// Heuristic once per problem signature (cached; false when none exists).
bool find_algo(const Key& key, Handle h, Desc& desc, Layout& la, Layout& lb, Layout& lc,
               std::uint32_t al_a, std::uint32_t al_b, std::uint32_t al_c, HeuristicResult* out) {
  {
    std::lock_guard<std::mutex> lock(g_mu);
    auto it = g_algos.find(key);
    if (it != g_algos.end()) {
      *out = it->second.second;
      return it->second.first;
    }
  }
  Pref pref;
  pref.set(kPrefMaxWorkspaceBytes, static_cast<std::uint64_t>(kWorkspace));
  pref.set(kPrefMinAlignmentA, al_a);
  pref.set(kPrefMinAlignmentB, al_b);
  pref.set(kPrefMinAlignmentC, al_c);
  pref.set(kPrefMinAlignmentD, al_c);
  HeuristicResult r{};
  int found = 0;
  const Status st = g_api.MatmulAlgoGetHeuristic(h, desc.d, la.l, lb.l, lc.l, lc.l, pref.p, 1, &r, &found);
  const bool ok = st == kSuccess && found > 0 && r.state == kSuccess;
  if (st != kSuccess && st != 15 /* NOT_SUPPORTED */) lt_check(st, "cublasLtMatmulAlgoGetHeuristic");
  std::lock_guard<std::mutex> lock(g_mu);
  g_algos[key] = {ok, r};
  *out = r;
  return ok;
}

}  // namespace

void add_search_path(const std::string& dir) {
  std::lock_guard<std::mutex> lock(g_mu);
  g_dirs.push_back(dir);
}

bool available(std::string* why) {
  std::lock_guard<std::mutex> lock(g_mu);
  const bool ok = load_locked();
  if (!ok && why) *why = g_why;
  return ok;
}

std::string library_path() {
  std::lock_guard<std::mutex> lock(g_mu);
  return g_lib ? g_path : std::string();
}

std::size_t version() {
  std::lock_guard<std::mutex> lock(g_mu);
  return g_lib ? g_api.GetVersion() : 0;
}

void gemm(const Gemm& g, Stream s) {
  Handle h = handle();
  int dev = 0;
  check(cudaGetDevice(&dev), "cudaGetDevice");
  const cudaDataType_t dt = g.f64 ? CUDA_R_64F : CUDA_R_32F;
  const std::int64_t es = g.f64 ? 8 : 4;
  Desc desc(g.f64 ? kCompute64F : kCompute32F, dt);
  // cuBLASLt's A = our B, its B = our A (see cublaslt.h)
  const std::int32_t op_a = g.b_trans ? kOpT : kOpN, op_b = g.a_trans ? kOpT : kOpN;
  desc.set(kDescTransA, op_a);
  desc.set(kDescTransB, op_b);
  std::uint32_t epi = kEpilogueDefault;
  switch (g.epi) {
    case Epilogue::bias: epi = kEpilogueBias; break;
    case Epilogue::relu_bias: epi = kEpilogueReluBias; break;
    case Epilogue::relu: epi = kEpilogueRelu; break;
    default: break;
  }
  desc.set(kDescEpilogue, epi);
  if (g.bias) {
    desc.set(kDescBiasPointer, g.bias);
    desc.set(kDescBiasBatchStride, static_cast<std::int64_t>(0));
  }
  Layout la(dt, g.b_trans ? g.K : g.N, g.b_trans ? g.N : g.K, g.ldb);
  Layout lb(dt, g.a_trans ? g.M : g.K, g.a_trans ? g.K : g.M, g.lda);
  Layout lc(dt, g.N, g.M, g.ldc);
  la.batch(g.batch, g.stride_b);
  lb.batch(g.batch, g.stride_a);
  lc.batch(g.batch, g.stride_c);
  const std::uint32_t al_a = alignment(g.b, g.stride_b * es, g.batch);
  const std::uint32_t al_b = alignment(g.a, g.stride_a * es, g.batch);
  std::uint32_t al_c = alignment(g.c, g.stride_c * es, g.batch);
  if (g.bias) {
    const std::uint32_t ab = alignment(g.bias, 0, 1);
    if (ab < al_c) al_c = ab;  // conservative: the epilogue reads bias like a C column
  }
  const Key key{dev, g.f64, g.M, g.N, g.K, g.lda, g.ldb, g.ldc, op_a, op_b, static_cast<int>(epi),
                g.batch, g.stride_a, g.stride_b, g.stride_c, al_a, al_b, al_c, g.bias ? 1u : 0u};
  HeuristicResult r{};
  if (!find_algo(key, h, desc, la, lb, lc, al_a, al_b, al_c, &r))
    throw std::runtime_error("cuBLASLt has no algorithm for this matmul (M=" + std::to_string(g.M) +
                             ", N=" + std::to_string(g.N) + ", K=" + std::to_string(g.K) + ")");
  Scratch ws(r.workspaceSize, s);
  const float one_f = 1.0f, zero_f = 0.0f;
  const double one_d = 1.0, zero_d = 0.0;
  const void* alpha = g.f64 ? static_cast<const void*>(&one_d) : static_cast<const void*>(&one_f);
  const void* beta = g.f64 ? static_cast<const void*>(&zero_d) : static_cast<const void*>(&zero_f);
  lt_check(g_api.Matmul(h, desc.d, alpha, g.b, la.l, g.a, lb.l, beta, g.c, lc.l, g.c, lc.l, &r.algo,
                        ws.get(), r.workspaceSize, s),
           "cublasLtMatmul");
}

bool gemm_s8(std::int64_t M, std::int64_t N, std::int64_t K, const std::int8_t* a, std::int64_t lda,
             const std::int8_t* bt, std::int64_t ldbt, std::int32_t* c, std::int64_t ldc, Stream s) {
  std::string why;
  if (!available(&why)) return false;
  Handle h = handle();
  int dev = 0;
  check(cudaGetDevice(&dev), "cudaGetDevice");
  Desc desc(kCompute32I, CUDA_R_32I);
  desc.set(kDescTransA, static_cast<std::int32_t>(kOpT));
  desc.set(kDescTransB, static_cast<std::int32_t>(kOpN));
  Layout la(CUDA_R_8I, K, N, ldbt);  // Bt (N, K) row-major = (K, N) column-major, op T
  Layout lb(CUDA_R_8I, K, M, lda);   // A (M, K) row-major = (K, M) column-major, op N
  Layout lc(CUDA_R_32I, N, M, ldc);
  const std::uint32_t al_a = alignment(bt, 0, 1), al_b = alignment(a, 0, 1), al_c = alignment(c, 0, 1);
  const Key key{dev, 2, M, N, K, lda, ldbt, ldc, kOpT, kOpN, 1, 1, 0, 0, 0, al_a, al_b, al_c, 0u};
  HeuristicResult r{};
  if (!find_algo(key, h, desc, la, lb, lc, al_a, al_b, al_c, &r)) return false;
  Scratch ws(r.workspaceSize, s);
  const std::int32_t one = 1, zero = 0;
  const Status st = g_api.Matmul(h, desc.d, &one, bt, la.l, a, lb.l, &zero, c, lc.l, c, lc.l, &r.algo,
                                 ws.get(), r.workspaceSize, s);
  if (st == 15) return false;
  lt_check(st, "cublasLtMatmul (int8)");
  return true;
}

}  // namespace lt
}  // namespace cuda
}  // namespace pyfastopt
