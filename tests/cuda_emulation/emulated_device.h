// Host models of the tensor-core instructions, written from the PTX ISA ("Matrix Fragments for
// mma.m16n8k8" with .tf32 and "for mma.m16n8k16" with .f16/.bf16), independently of the kernels
// that use them: each lane deposits its fragment registers in its warp's exchange buffer, the
// warp meets at a barrier, and each lane computes its own accumulator elements from the full
// matrices. g = lane / 4 ("groupID"), t = lane % 4 ("threadID_in_group").
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

struct EmuWarpExchange {
  double a[16][16];  // [row][k]
  double b[16][8];   // [k][column]
};
// Copies to shared memory per width in bytes (copy_to_shared), so that a test can tell which
// vector width a launch used (16 / 8-byte cp.async or element-wise).
inline long g_copy_count[17];
inline void emu_record_copy(int bytes) { ++g_copy_count[bytes]; }

// Two buffers per warp, alternating per mma: a lane can only write buffer p again after the
// barrier of the next mma, which every lane reaches only after reading buffer p. One barrier per mma.
inline EmuWarpExchange g_warp_exchange[64][2];

// The tensor core reads only the 19 high bits of a .tf32 operand.
inline double emu_tf32_value(uint32_t bits) {
  bits &= 0xffffe000u;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}
inline double emu_bf16_value(uint32_t bits16) {
  const uint32_t u = bits16 << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
inline double emu_f16_value(uint32_t h) {
  const int sign = (h >> 15) & 1, exp = (h >> 10) & 0x1f, mant = h & 0x3ff;
  double v = exp == 0 ? std::ldexp(double(mant), -24) : (exp == 31 ? INFINITY : std::ldexp(double(1024 + mant), exp - 25));
  if (exp == 31 && mant) v = NAN;
  return sign ? -v : v;
}

// D (fp32, 16 x 8) += A (16 x K) * B (K x 8); the accumulator fragment: element i of a lane is
// (row g + 8 * (i / 2), column 2 * t + i % 2).
template <int K>
inline void emu_mma_finish(float d[4], EmuWarpExchange& x, int g, int t) {
  emu_warp_sync();  // every lane's fragments are in
  for (int i = 0; i < 4; ++i) {
    const int row = g + 8 * (i / 2), col = 2 * t + i % 2;
    double sum = d[i];
    for (int k = 0; k < K; ++k) sum += x.a[row][k] * x.b[k][col];
    d[i] = float(sum);
  }
  emu_mma_parity() ^= 1u;
}

inline void emu_mma_tf32_m16n8k8(float d[4], const uint32_t a[4], const uint32_t b[2]) {
  const int lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
  EmuWarpExchange& x = g_warp_exchange[threadIdx.x / 32][emu_mma_parity()];
  x.a[g][t] = emu_tf32_value(a[0]);
  x.a[g + 8][t] = emu_tf32_value(a[1]);
  x.a[g][t + 4] = emu_tf32_value(a[2]);
  x.a[g + 8][t + 4] = emu_tf32_value(a[3]);
  x.b[t][g] = emu_tf32_value(b[0]);
  x.b[t + 4][g] = emu_tf32_value(b[1]);
  emu_mma_finish<8>(d, x, g, t);
}

// A: register i holds (row g + 8 * (i % 2), k = 2t + 8 * (i / 2) + h) in half h (low half first);
// B: register j holds (k = 2t + 8j + h, column g).
inline void emu_mma_16bit_m16n8k16(float d[4], const uint32_t a[4], const uint32_t b[2], bool bf16) {
  const int lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
  EmuWarpExchange& x = g_warp_exchange[threadIdx.x / 32][emu_mma_parity()];
  auto value = [bf16](uint32_t half) { return bf16 ? emu_bf16_value(half) : emu_f16_value(half); };
  for (int i = 0; i < 4; ++i)
    for (int h = 0; h < 2; ++h) x.a[g + 8 * (i % 2)][2 * t + 8 * (i / 2) + h] = value((a[i] >> (16 * h)) & 0xffffu);
  for (int j = 0; j < 2; ++j)
    for (int h = 0; h < 2; ++h) x.b[2 * t + 8 * j + h][g] = value((b[j] >> (16 * h)) & 0xffffu);
  emu_mma_finish<16>(d, x, g, t);
}
