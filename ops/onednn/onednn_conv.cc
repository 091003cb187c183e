// oneDNN convolutions and max pools as XLA FFI custom calls (CPU, float32,
// NHWC / HWIO).
//
// Three targets, one per pass of a dense kxk convolution:
//   onednn_conv_fwd          x (N,H,W,C), w (k,k,C,F)  -> y  (N,Ho,Wo,F)
//   onednn_conv_bwd_data     dy (N,Ho,Wo,F), w         -> dx (N,H,W,C)
//   onednn_conv_bwd_weights  x, dy                     -> dw (k,k,C,F)
// and two for a kxk max pool (padding excluded from the max):
//   onednn_max_pool_fwd      x (N,H,W,C)     -> y (N,Ho,Wo,C), ws (N,Ho,Wo,C)
//   onednn_max_pool_bwd      dy, ws (uint8)  -> dx (N,H,W,C)
// where ws, oneDNN's workspace, holds each output's window position of its
// first maximum (checked to be one byte per output). Attributes: stride,
// the spatial padding pad_top/bottom/left/right, and a pool's window.
//
// Activations stay NHWC (oneDNN's brgemm kernels run on it directly); the
// weights go through oneDNN's preferred blocked layout by a reorder, which
// costs little (weights are small) and picks the fast kernels for all three
// passes. Primitives are JIT-compiled once per shape and cached. Calls are
// serialized: each uses every core through OpenMP, and two at once (XLA may
// run independent branches concurrently) would oversubscribe them.
// Built by ops/onednn/build.py (ops.onednn.build); called through
// ops.onednn.call by ops.conv.onednn_conv and ops.pool.onednn_max_pool.

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <tuple>
#include <utility>

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

// make()'s value, made once per key (a cache per call site). Must be called
// with Lock() held.
template <typename Value, typename Key, typename Make>
Value& Cached(const Key& key, Make make) {
  static std::map<Key, Value> cache;
  auto it = cache.find(key);
  if (it == cache.end()) it = cache.emplace(key, make()).first;
  return it->second;
}

Plan& GetPlan(Pass pass, const Problem& p) {
  return Cached<Plan>(std::make_tuple(static_cast<int>(pass), p.key()),
                      [&] { return MakePlan(pass, p); });
}

// Runs body(stream) under Lock(), waits for it, and turns oneDNN's
// exceptions into an FFI error that names `what`.
template <typename Body>
ffi::Error Guarded(const char* what, Body body) {
  try {
    std::lock_guard<std::mutex> guard(Lock());
    dnnl::stream stream(Engine());
    body(stream);
    stream.wait();
    return ffi::Error::Success();
  } catch (const std::exception& e) {
    return ffi::Error(ffi::ErrorCode::kInternal,
                      std::string("oneDNN ") + what + " failed: " + e.what());
  }
}

ffi::Error Run(Pass pass, const Problem& p, void* x, void* w, void* y) {
  return Guarded("convolution", [&](dnnl::stream& stream) {
    Plan& plan = GetPlan(pass, p);
    auto& eng = Engine();
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
  });
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

// ------------------------------------------------------------ max pool --

struct PoolPlan {
  dnnl::primitive pool;
  memory::desc src, dst, workspace;
};

// p.f is unused (== p.c), p.k is the window.
PoolPlan MakePoolPlan(bool forward, const Problem& p) {
  auto& eng = Engine();
  const auto f32 = memory::data_type::f32;
  memory::desc src({p.n, p.c, p.h, p.w}, f32, tag::nhwc);
  memory::desc dst({p.n, p.c, p.ho, p.wo}, f32, tag::nhwc);
  memory::dims strides{p.stride, p.stride}, kernel{p.k, p.k}, dilation{0, 0},
      lo{p.pt, p.pl}, hi{p.pb, p.pr};
  const auto alg = dnnl::algorithm::pooling_max;
  dnnl::pooling_forward::primitive_desc fwd(
      eng, dnnl::prop_kind::forward_training, alg, src, dst, strides, kernel,
      dilation, lo, hi);
  const memory::desc ws = fwd.workspace_desc();
  if (ws.get_size() != static_cast<size_t>(p.n * p.ho * p.wo * p.c))
    throw std::runtime_error("oneDNN's pooling workspace is not one byte per "
                             "output: " + std::to_string(ws.get_size()));
  if (forward) return {dnnl::pooling_forward(fwd), src, dst, ws};
  dnnl::pooling_backward::primitive_desc bwd(eng, alg, src, dst, strides,
                                             kernel, dilation, lo, hi, fwd);
  return {dnnl::pooling_backward(bwd), src, dst, ws};
}

// forward: x -> y, ws;  backward: dy, ws -> dx (x and y name src and dst).
ffi::Error RunPool(bool forward, const Problem& p, void* x, void* y,
                   void* ws) {
  return Guarded("max pool", [&](dnnl::stream& stream) {
    PoolPlan& plan = Cached<PoolPlan>(std::make_tuple(forward, p.key()), [&] {
      return MakePoolPlan(forward, p);
    });
    auto& eng = Engine();
    memory src(plan.src, eng, x), dst(plan.dst, eng, y),
        workspace(plan.workspace, eng, ws);
    const int src_arg = forward ? DNNL_ARG_SRC : DNNL_ARG_DIFF_SRC;
    const int dst_arg = forward ? DNNL_ARG_DST : DNNL_ARG_DIFF_DST;
    plan.pool.execute(stream, {{src_arg, src}, {dst_arg, dst},
                               {DNNL_ARG_WORKSPACE, workspace}});
  });
}

using U8 = ffi::Buffer<ffi::U8, 4>;
using U8Out = ffi::ResultBuffer<ffi::U8, 4>;

ffi::Error MaxPoolFwd(F32 x, F32Out y, U8Out ws, int64_t window,
                      int64_t stride, int64_t pad_top, int64_t pad_bottom,
                      int64_t pad_left, int64_t pad_right) {
  auto p = Describe(x.dimensions(), y->dimensions(), window, stride, pad_top,
                    pad_bottom, pad_left, pad_right);
  return RunPool(true, p, x.untyped_data(), y->untyped_data(),
                 ws->untyped_data());
}

ffi::Error MaxPoolBwd(F32 dy, U8 ws, F32Out dx, int64_t window,
                      int64_t stride, int64_t pad_top, int64_t pad_bottom,
                      int64_t pad_left, int64_t pad_right) {
  auto p = Describe(dx->dimensions(), dy.dimensions(), window, stride, pad_top,
                    pad_bottom, pad_left, pad_right);
  return RunPool(false, p, dx->untyped_data(), dy.untyped_data(),
                 ws.untyped_data());
}

}  // namespace

// `binding` followed by the stride and the padding, a conv's and a pool's.
template <typename B>
auto WindowAttrs(B binding) {
  return std::move(binding).template Attr<int64_t>("stride")
      .template Attr<int64_t>("pad_top")
      .template Attr<int64_t>("pad_bottom")
      .template Attr<int64_t>("pad_left")
      .template Attr<int64_t>("pad_right");
}

// Two 4-D float32 operands, one result.
auto ConvBinding() {
  return WindowAttrs(ffi::Ffi::Bind().Arg<F32>().Arg<F32>().Ret<F32>());
}

XLA_FFI_DEFINE_HANDLER_SYMBOL(OnednnConvFwd, ConvFwd, ConvBinding());
XLA_FFI_DEFINE_HANDLER_SYMBOL(OnednnConvBwdData, ConvBwdData, ConvBinding());
XLA_FFI_DEFINE_HANDLER_SYMBOL(OnednnConvBwdWeights, ConvBwdWeights,
                              ConvBinding());
XLA_FFI_DEFINE_HANDLER_SYMBOL(
    OnednnMaxPoolFwd, MaxPoolFwd,
    WindowAttrs(ffi::Ffi::Bind().Arg<F32>().Ret<F32>().Ret<U8>()
                    .Attr<int64_t>("window")));
XLA_FFI_DEFINE_HANDLER_SYMBOL(
    OnednnMaxPoolBwd, MaxPoolBwd,
    WindowAttrs(ffi::Ffi::Bind().Arg<F32>().Arg<U8>().Ret<F32>()
                    .Attr<int64_t>("window")));
