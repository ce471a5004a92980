// scratch.h -- per-thread scratch buffers and the 2-D grid split of C, shared by the GEMM
// drivers (gemm, qgemm) and ISA kernels.
//
// Everything here has internal linkage (an unnamed namespace): ISA translation units
// include it too, and each gets its own copy compiled with its own flags (no ODR sharing
// across ISAs; see ARCHITECTURE.md).
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdlib>
#include <new>

namespace pyfastopt {
namespace {

// A grow-only, 64-byte aligned buffer, freed when its thread exits. Growing does not keep
// the contents. Throws std::bad_alloc (a task's exception reaches the caller as
// MemoryError: see thread_pool.h).
struct ScratchBuffer {
  void* p = nullptr;
  std::size_t bytes = 0;
  ScratchBuffer() = default;
  ScratchBuffer(const ScratchBuffer&) = delete;
  ScratchBuffer& operator=(const ScratchBuffer&) = delete;
  ~ScratchBuffer() { std::free(p); }
  void* get(std::size_t need) {
    need = (std::max<std::size_t>(need, 64) + 63) / 64 * 64;
    if (need > bytes) {
      std::free(p);
      p = std::aligned_alloc(64, need);
      bytes = p ? need : 0;
      if (!p) throw std::bad_alloc();
    }
    return p;
  }
};

// The calling thread's scratch buffer number `Slot` of translation unit-private `Tag`
// (a type in the user's unnamed namespace, so two users never share a buffer), at
// least `bytes` long. Reused across calls; valid until the same slot is asked again on
// this thread. One task at a time runs on a pool thread, so a task may use it freely.
template <class Tag, int Slot = 0>
void* thread_scratch(std::size_t bytes) {
  thread_local ScratchBuffer buf;
  return buf.get(bytes);
}

// [lo, hi) of `count` items for part `i` of `parts`, split as evenly as possible.
inline void even_split(std::size_t count, std::size_t parts, std::size_t i, std::size_t& lo,
                       std::size_t& hi) {
  lo = count * i / parts;
  hi = count * (i + 1) / parts;
}

// C's row_panels x col_panels micro-panels cut into a tm x tn grid of blocks, block t
// row-major over the grid; each block's panel ranges split as evenly as possible. Every
// panel is in exactly one block, so the grid (the thread count) never changes a bit of
// a product whose elements are each computed whole by one block.
struct GridSplit {
  std::size_t row_panels, col_panels, tm, tn;
  std::size_t blocks() const { return tm * tn; }
  // Row panels [p0, p1) and column panels [q0, q1) of block t.
  void block(std::size_t t, std::size_t& p0, std::size_t& p1, std::size_t& q0, std::size_t& q1) const {
    even_split(row_panels, tm, t / tn, p0, p1);
    even_split(col_panels, tn, t % tn, q0, q1);
  }
};

}  // namespace
}  // namespace pyfastopt
