// The few PTX instructions the grouped-convolution kernels use (mma.sync, cp.async, cvt), each
// behind one small wrapper, plus the 16-bit storage types and fast integer division.
//
// Three compilations see this header:
//  - nvcc's device pass (__CUDA_ARCH__ defined): inline PTX. mma.sync and cp.async need sm_80;
//    below that the tensor-core wrappers trap (the host never launches them there, see
//    grouped_conv_cuda.cpp) and the copies fall back to plain loads and stores.
//  - nvcc's host pass: device bodies are parsed but never run; nothing here is emitted.
//  - the host emulation of tests/cuda_emulation (HAMFAST_CUDA_EMULATION): the wrappers call
//    emu_* functions that model the hardware, including the mma fragment layouts of the PTX ISA.
//    Those models live in the tests on purpose: they are an independent statement of the ISA,
//    so an indexing mistake in the kernels cannot be mirrored by the model.
#pragma once

#include <cstdint>
#include <cstring>
#include <type_traits>

#if defined(HAMFAST_CUDA_EMULATION)
#include "emulated_device.h"  // tests/cuda_emulation
#endif

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
#define HAMFAST_SM80 1
#endif

namespace hamfast {
namespace cuda {

// 16-bit floating-point storage, bit-compatible with at::BFloat16 / at::Half (the .cpp casts).
struct bf16_t {
  uint16_t bits;
};
struct f16_t {
  uint16_t bits;
};

__host__ __device__ inline uint32_t float_bits(float f) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(f);
#else
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
#endif
}

__host__ __device__ inline float bits_float(uint32_t u) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(u);
#else
  float f;
  std::memcpy(&f, &u, 4);
  return f;
#endif
}

// bfloat16 <-> float. Widening is exact; narrowing rounds to nearest even like cvt.rn.bf16.f32
// (done in integer arithmetic so that host and device round identically, sm_75 included).
__host__ __device__ inline float to_float(bf16_t v) { return bits_float(uint32_t(v.bits) << 16); }
__host__ __device__ inline bf16_t float_to_bf16(float f) {
  uint32_t u = float_bits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return bf16_t{uint16_t((u >> 16) | 0x40u)};  // NaN stays a (quiet) NaN
  u += 0x7fffu + ((u >> 16) & 1u);
  return bf16_t{uint16_t(u >> 16)};
}

// float16 <-> float, round to nearest even.
__host__ __device__ inline float to_float(f16_t v) {
#if defined(__CUDA_ARCH__)
  float f;
  asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(v.bits));
  return f;
#else
  const uint32_t sign = uint32_t(v.bits & 0x8000u) << 16;
  const uint32_t exp = (v.bits >> 10) & 0x1fu, mant = v.bits & 0x3ffu;
  if (exp == 0x1f) return bits_float(sign | 0x7f800000u | (mant << 13));
  if (exp != 0) return bits_float(sign | ((exp + 112) << 23) | (mant << 13));
  return bits_float(sign | float_bits(float(mant) * 5.9604644775390625e-8f));  // mant * 2^-24, exact
#endif
}
__host__ __device__ inline f16_t float_to_f16(float f) {
#if defined(__CUDA_ARCH__)
  uint16_t h;
  asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f));
  return f16_t{h};
#else
  uint32_t x = float_bits(f);
  const uint16_t sign = uint16_t((x >> 16) & 0x8000u);
  x &= 0x7fffffffu;
  if (x >= 0x7f800000u) return f16_t{uint16_t(sign | (x > 0x7f800000u ? 0x7e00u : 0x7c00u))};
  if (x >= 0x477ff000u) return f16_t{uint16_t(sign | 0x7c00u)};  // >= 65520 rounds to infinity
  if (x < 0x38800000u) {                                          // below 2^-14: subnormal half or zero
    if (x < 0x33000000u) return f16_t{sign};                      // below 2^-25: rounds to zero
    const uint32_t mant = (x & 0x7fffffu) | 0x800000u;
    const int shift = 126 - int(x >> 23);  // value / 2^-24 = mant >> shift
    uint32_t q = mant >> shift;
    const uint32_t rem = mant & ((1u << shift) - 1u), half = 1u << (shift - 1);
    if (rem > half || (rem == half && (q & 1u))) ++q;
    return f16_t{uint16_t(sign | q)};
  }
  const uint32_t r = x + 0xfffu + ((x >> 13) & 1u) - 0x38000000u;
  return f16_t{uint16_t(sign | (r >> 13))};
#endif
}

__host__ __device__ inline float to_float(float v) { return v; }
__host__ __device__ inline double to_float(double v) { return v; }

// Accumulator -> stored element type.
template <typename T, typename Acc>
__host__ __device__ inline T from_acc(Acc v) {
  if constexpr (sizeof(T) == 2) {
    if constexpr (std::is_same<T, bf16_t>::value) return float_to_bf16(float(v));
    else return float_to_f16(float(v));
  } else {
    return T(v);
  }
}

// float -> tf32 operand: round to nearest, ties away from zero, on the 13 dropped mantissa bits
// (cvt.rna.tf32.f32). Feeding raw fp32 bits to mma would truncate instead.
__device__ inline uint32_t to_tf32(float f) {
#if defined(HAMFAST_SM80)
  uint32_t r;
  asm("cvt.rna.tf32.f32 %0, %1;" : "=r"(r) : "f"(f));
  return r;
#else
  uint32_t u = float_bits(f);
  if ((u & 0x7f800000u) != 0x7f800000u) u += 0x1000u;  // finite: round half away (may carry into the exponent)
  return u & 0xffffe000u;
#endif
}

// D += A * B on one warp; fragments as in the PTX ISA "Matrix Fragments for mma.m16n8k8/k16".
__device__ inline void mma_tf32_m16n8k8(float d[4], const uint32_t a[4], const uint32_t b[2]) {
#if defined(HAMFAST_SM80)
  asm volatile(
      "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
#elif defined(__CUDA_ARCH__)
  __trap();
#elif defined(HAMFAST_CUDA_EMULATION)
  emu_mma_tf32_m16n8k8(d, a, b);
#endif
}

template <bool kBf16>
__device__ inline void mma_16bit_m16n8k16(float d[4], const uint32_t a[4], const uint32_t b[2]) {
#if defined(HAMFAST_SM80)
  if constexpr (kBf16) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
  } else {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
  }
#elif defined(__CUDA_ARCH__)
  __trap();
#elif defined(HAMFAST_CUDA_EMULATION)
  emu_mma_16bit_m16n8k16(d, a, b, kBf16);
#endif
}

// Copies kBytes from global to shared memory, or zero-fills them when !valid (then `src` is not
// read, but must still be a mapped address: callers pass the tensor's base). 4, 8 and 16 bytes go
// through cp.async (asynchronous: complete at cp_async_wait); 2-byte copies are synchronous.
template <int kBytes>
__device__ inline void copy_to_shared(void* dst, const void* src, bool valid) {
#if defined(HAMFAST_CUDA_EMULATION)
  emu_record_copy(kBytes);  // lets the emulation test see which copy width a launch used
#endif
#if defined(HAMFAST_SM80)
  if constexpr (kBytes >= 4) {
    const uint32_t saddr = static_cast<uint32_t>(__cvta_generic_to_shared(dst));
    const int src_bytes = valid ? kBytes : 0;
    if constexpr (kBytes == 16) {
      asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(saddr), "l"(src), "r"(src_bytes));
    } else {
      asm volatile("cp.async.ca.shared.global [%0], [%1], %2, %3;\n" ::"r"(saddr), "l"(src), "n"(kBytes),
                   "r"(src_bytes));
    }
    return;
  }
#endif
  struct alignas(kBytes) Chunk {
    unsigned char b[kBytes];
  };
  Chunk v{};
  if (valid) v = *static_cast<const Chunk*>(src);
  *static_cast<Chunk*>(dst) = v;
}

__device__ inline void cp_async_commit() {
#if defined(HAMFAST_SM80)
  asm volatile("cp.async.commit_group;\n" ::);
#endif
}

// Waits until at most kPending committed groups of this thread are still in flight.
template <int kPending>
__device__ inline void cp_async_wait() {
#if defined(HAMFAST_SM80)
  asm volatile("cp.async.wait_group %0;\n" ::"n"(kPending));
#endif
}

__host__ __device__ inline uint32_t umulhi(uint32_t a, uint32_t b) {
#if defined(__CUDA_ARCH__)
  return __umulhi(a, b);
#else
  return uint32_t((uint64_t(a) * b) >> 32);
#endif
}

// n / d and n % d for 0 <= n < 2^31 and a divisor fixed per launch, by multiply-high and shift
// (Granlund & Montgomery): a hardware integer division costs ~20 instructions per index.
struct FastDivmod {
  uint32_t divisor = 1, multiplier = 1, shift = 0;
  FastDivmod() = default;
  // d = 0 (a zero-sized channel count) has no index to divide: the fields stay harmless instead of
  // dividing by zero on the host, and the launchers run no loop over such an extent.
  explicit FastDivmod(uint32_t d) : divisor(d) {
    if (d == 0) return;
    while ((uint64_t(1) << shift) < d) ++shift;
    multiplier = uint32_t(((uint64_t(1) << 32) * ((uint64_t(1) << shift) - d)) / d + 1);
  }
  __host__ __device__ uint32_t div(uint32_t n) const { return (umulhi(n, multiplier) + n) >> shift; }
  __host__ __device__ void divmod(uint32_t n, uint32_t& q, uint32_t& r) const {
    q = div(n);
    r = n - q * divisor;
  }
};

}  // namespace cuda
}  // namespace hamfast
