// dropout-inl.h -- the scalar walk over the element -> (block, word) map of dropout.h.
// NO include guard: included inside each ISA TU's anonymous namespace. SIMD variants use
// it for partial groups at the ends of a range, so every element is decided identically.

// Elements [first, first + n): x[k], y[k], keep[k] belong to flat index first + k.
template <class T>
void apply_scalar(const T* x, T* y, std::uint8_t* keep, std::size_t n, std::uint64_t first,
                  const DropoutParams& p) {
  const T scale = static_cast<T>(p.scale);
  const std::uint64_t end = first + n;
  std::uint64_t i = first;
  while (i < end) {
    const std::uint64_t g = i >> 6;
    const std::uint64_t group_end = (g + 1) << 6 < end ? (g + 1) << 6 : end;
    std::uint32_t words[16][4];
    std::uint16_t have = 0;  // bit l: block 16g + l computed
    for (; i < group_end; ++i) {
      const unsigned r = static_cast<unsigned>(i & 63), j = r >> 4, l = r & 15;
      if (!(have >> l & 1u)) {
        const std::uint64_t block = g * 16 + l;
        words[l][0] = static_cast<std::uint32_t>(block);
        words[l][1] = static_cast<std::uint32_t>(block >> 32);
        words[l][2] = p.offset[0];
        words[l][3] = p.offset[1];
        philox4x32_10(words[l], p.key[0], p.key[1]);
        have = static_cast<std::uint16_t>(have | (1u << l));
      }
      const bool k = words[l][j] >= p.threshold;
      const std::size_t idx = static_cast<std::size_t>(i - first);
      if (y) y[idx] = x[idx] * (k ? scale : T(0));
      if (keep) keep[idx] = k ? 1 : 0;
    }
  }
}

// Walk [first, first + n): partial groups with apply_scalar, whole 64-element groups with
// full_group(start_index, offset_into_arrays, pair): pair = true covers two consecutive
// groups (128 elements) at once, so a variant can interleave two independent chains.
template <class T, class Full>
void apply_groups(const T* x, T* y, std::uint8_t* keep, std::size_t n, std::uint64_t first,
                  const DropoutParams& p, const Full& full_group) {
  const std::uint64_t end = first + n;
  std::uint64_t i = first;
  auto scalar_part = [&](std::uint64_t a, std::uint64_t b) {
    const std::size_t off = static_cast<std::size_t>(a - first);
    apply_scalar<T>(x ? x + off : nullptr, y ? y + off : nullptr, keep ? keep + off : nullptr,
                    static_cast<std::size_t>(b - a), a, p);
  };
  const std::uint64_t aligned = (i + 63) & ~static_cast<std::uint64_t>(63);
  if (aligned > i) {
    const std::uint64_t b = aligned < end ? aligned : end;
    scalar_part(i, b);
    i = b;
  }
  for (; i + 128 <= end; i += 128) full_group(i, static_cast<std::size_t>(i - first), true);
  for (; i + 64 <= end; i += 64) full_group(i, static_cast<std::size_t>(i - first), false);
  if (i < end) scalar_part(i, end);
}
