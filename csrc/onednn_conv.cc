// oneDNN convolutions as XLA FFI custom calls (CPU, float32, NHWC / HWIO).
//
// Three targets, one per pass of a dense kxk convolution:
//   onednn_conv_fwd          x (N,H,W,C), w (k,k,C,F)  -> y  (N,Ho,Wo,F)
//   onednn_conv_bwd_data     dy (N,Ho,Wo,F), w         -> dx (N,H,W,C)
//   onednn_conv_bwd_weights  x, dy                     -> dw (k,k,C,F)
// Attributes: stride, and the spatial padding pad_top/bottom/left/right.
//
// Activations stay NHWC (oneDNN's brgemm kernels run on it directly); the
// weights go through oneDNN's preferred blocked layout by a reorder, which
// costs little (weights are small) and picks the fast kernels for all three
// passes. Primitives are JIT-compiled once per shape and cached. Calls are
// serialized: each uses every core through OpenMP, and two at once (XLA may
// run independent branches concurrently) would oversubscribe them.
// Built by scripts/build_onednn.py (models/onednn.build); called through
// models/onednn.call by fast_ops.onednn_conv.

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <tuple>

#include "oneapi/dnnl/dnnl.hpp"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;
using dnnl::memory;
using tag = memory::format_tag;

namespace {

enum class Pass { kFwd, kBwdData, kBwdWeights };

struct Problem {
  int64_t n, h, w, c, f, k, ho, wo, stride, pt, pb, pl, pr;
  auto key() const {
    return std::make_tuple(n, h, w, c, f, k, ho, wo, stride, pt, pb, pl, pr);
  }
};

// One pass of one problem: the primitive, and the weights reorder between
// the caller's HWIO and the primitive's layout (with its buffer).
struct Plan {
  dnnl::primitive conv;
  dnnl::reorder weights_reorder;
  memory user_weights, weights;  // HWIO view (handle set per call), blocked.
  memory::desc src, dst;
};

dnnl::engine& Engine() {
  static dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  return engine;
}

Plan MakePlan(Pass pass, const Problem& p) {
  auto& eng = Engine();
  const auto f32 = memory::data_type::f32;
  memory::desc src({p.n, p.c, p.h, p.w}, f32, tag::nhwc);
  memory::desc dst({p.n, p.f, p.ho, p.wo}, f32, tag::nhwc);
  memory::desc hwio({p.f, p.c, p.k, p.k}, f32, tag::hwio);
  memory::desc any_w({p.f, p.c, p.k, p.k}, f32, tag::any);
  memory::dims strides{p.stride, p.stride}, lo{p.pt, p.pl}, hi{p.pb, p.pr};
  const auto alg = dnnl::algorithm::convolution_direct;
  dnnl::convolution_forward::primitive_desc fwd(
      eng, dnnl::prop_kind::forward_training, alg, src, any_w, dst, strides,
      lo, hi);
  Plan plan;
  plan.src = src;
  plan.dst = dst;
  plan.user_weights = memory(hwio, eng, nullptr);
  if (pass == Pass::kFwd) {
    plan.conv = dnnl::convolution_forward(fwd);
    plan.weights = memory(fwd.weights_desc(), eng);
    plan.weights_reorder = dnnl::reorder(plan.user_weights, plan.weights);
  } else if (pass == Pass::kBwdData) {
    dnnl::convolution_backward_data::primitive_desc bwd(
        eng, alg, src, any_w, dst, strides, lo, hi, fwd);
    plan.conv = dnnl::convolution_backward_data(bwd);
    plan.weights = memory(bwd.weights_desc(), eng);
    plan.weights_reorder = dnnl::reorder(plan.user_weights, plan.weights);
  } else {
    dnnl::convolution_backward_weights::primitive_desc bwd(
        eng, alg, src, any_w, dst, strides, lo, hi, fwd);
    plan.conv = dnnl::convolution_backward_weights(bwd);
    plan.weights = memory(bwd.diff_weights_desc(), eng);
    plan.weights_reorder = dnnl::reorder(plan.weights, plan.user_weights);
  }
  return plan;
}

std::mutex& Lock() {
  static std::mutex mutex;
  return mutex;
}

// Must be called with Lock() held.
Plan& GetPlan(Pass pass, const Problem& p) {
  static std::map<std::tuple<int, decltype(p.key())>, Plan> cache;
  auto key = std::make_tuple(static_cast<int>(pass), p.key());
  auto it = cache.find(key);
  if (it == cache.end()) it = cache.emplace(key, MakePlan(pass, p)).first;
  return it->second;
}

ffi::Error Run(Pass pass, const Problem& p, void* x, void* w, void* y) {
  try {
    std::lock_guard<std::mutex> guard(Lock());
    Plan& plan = GetPlan(pass, p);
    auto& eng = Engine();
    dnnl::stream stream(eng);
    memory src(plan.src, eng, x), dst(plan.dst, eng, y);
    plan.user_weights.set_data_handle(w);
    if (pass == Pass::kFwd) {
      plan.weights_reorder.execute(stream, plan.user_weights, plan.weights);
      plan.conv.execute(stream, {{DNNL_ARG_SRC, src},
                                 {DNNL_ARG_WEIGHTS, plan.weights},
                                 {DNNL_ARG_DST, dst}});
    } else if (pass == Pass::kBwdData) {
      plan.weights_reorder.execute(stream, plan.user_weights, plan.weights);
      plan.conv.execute(stream, {{DNNL_ARG_DIFF_SRC, src},
                                 {DNNL_ARG_WEIGHTS, plan.weights},
                                 {DNNL_ARG_DIFF_DST, dst}});
    } else {
      plan.conv.execute(stream, {{DNNL_ARG_SRC, src},
                                 {DNNL_ARG_DIFF_WEIGHTS, plan.weights},
                                 {DNNL_ARG_DIFF_DST, dst}});
      plan.weights_reorder.execute(stream, plan.weights, plan.user_weights);
    }
    stream.wait();
    return ffi::Error::Success();
  } catch (const dnnl::error& e) {
    return ffi::Error(ffi::ErrorCode::kInternal,
                      std::string("oneDNN convolution failed: ") + e.what());
  }
}

using F32 = ffi::Buffer<ffi::F32, 4>;
using F32Out = ffi::ResultBuffer<ffi::F32, 4>;

// x: (N,H,W,C) dims, y: (N,Ho,Wo,F) dims, k: kernel size.
Problem Describe(ffi::Span<const int64_t> x, ffi::Span<const int64_t> y,
                 int64_t k, int64_t stride, int64_t pt, int64_t pb, int64_t pl,
                 int64_t pr) {
  return {x[0], x[1], x[2], x[3], y[3], k, y[1], y[2], stride, pt, pb, pl, pr};
}

ffi::Error ConvFwd(F32 x, F32 w, F32Out y, int64_t stride, int64_t pad_top,
                   int64_t pad_bottom, int64_t pad_left, int64_t pad_right) {
  auto p = Describe(x.dimensions(), y->dimensions(), w.dimensions()[0], stride,
                    pad_top, pad_bottom, pad_left, pad_right);
  return Run(Pass::kFwd, p, x.untyped_data(), w.untyped_data(),
             y->untyped_data());
}

ffi::Error ConvBwdData(F32 dy, F32 w, F32Out dx, int64_t stride,
                       int64_t pad_top, int64_t pad_bottom, int64_t pad_left,
                       int64_t pad_right) {
  auto p = Describe(dx->dimensions(), dy.dimensions(), w.dimensions()[0],
                    stride, pad_top, pad_bottom, pad_left, pad_right);
  return Run(Pass::kBwdData, p, dx->untyped_data(), w.untyped_data(),
             dy.untyped_data());
}

ffi::Error ConvBwdWeights(F32 x, F32 dy, F32Out dw, int64_t stride,
                          int64_t pad_top, int64_t pad_bottom,
                          int64_t pad_left, int64_t pad_right) {
  auto p = Describe(x.dimensions(), dy.dimensions(), dw->dimensions()[0],
                    stride, pad_top, pad_bottom, pad_left, pad_right);
  return Run(Pass::kBwdWeights, p, x.untyped_data(), dw->untyped_data(),
             dy.untyped_data());
}

}  // namespace

// Two 4-D float32 operands, one result, the stride and the padding.
auto Binding() {
  return ffi::Ffi::Bind()
      .Arg<F32>()
      .Arg<F32>()
      .Ret<F32>()
      .Attr<int64_t>("stride")
      .Attr<int64_t>("pad_top")
      .Attr<int64_t>("pad_bottom")
      .Attr<int64_t>("pad_left")
      .Attr<int64_t>("pad_right");
}

XLA_FFI_DEFINE_HANDLER_SYMBOL(OnednnConvFwd, ConvFwd, Binding());
XLA_FFI_DEFINE_HANDLER_SYMBOL(OnednnConvBwdData, ConvBwdData, Binding());
XLA_FFI_DEFINE_HANDLER_SYMBOL(OnednnConvBwdWeights, ConvBwdWeights,
                              Binding());
