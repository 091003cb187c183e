// oneDNN convolutions and max pools as XLA FFI custom calls (CPU, float32
// or bfloat16, NHWC / HWIO).
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
// Every operand of a call is float32, or every one bfloat16, except the
// weight gradient, which is float32 either way: oneDNN accumulates in
// float32, and the optimizer's master weights are float32.
//
// Activations stay NHWC (oneDNN's brgemm kernels run on it directly); the
// weights go through oneDNN's preferred blocked layout by a reorder, which
// costs little (weights are small) and picks the fast kernels for all three
// passes. Primitives are JIT-compiled once per shape and cached. Calls are
// serialized: each uses every core, and two at once (XLA may run
// independent branches concurrently) would oversubscribe them.
//
// Every primitive takes its scratch memory from one buffer of ours
// (scratchpad_mode::user). oneDNN's default keeps a scratchpad per thread,
// sized when a primitive is created; XLA runs a call on whichever of its
// threads is free, and a primitive created on one thread and run on another
// with a smaller scratchpad wrote past it (a GEMM-based weight gradient, as
// oneDNN picks on AVX2 CPUs, crashed that way).
// Built by ops/onednn/build.py (ops.onednn.build); called through
// ops.onednn.call by ops.conv.onednn_conv and ops.pool.onednn_max_pool.

#include <cstdint>
#include <cstdlib>
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
using dt = memory::data_type;

namespace {

enum class Pass { kFwd, kBwdData, kBwdWeights };

struct Problem {
  int64_t n, h, w, c, f, k, ho, wo, stride, pt, pb, pl, pr;
  dt type;  // Of the activations (and the weights but for a gradient).
  auto key() const {
    return std::make_tuple(n, h, w, c, f, k, ho, wo, stride, pt, pb, pl, pr,
                           static_cast<int>(type));
  }
};

// One pass of one problem: the primitive, and the weights reorder between
// the caller's HWIO and the primitive's layout (with its buffer).
struct Plan {
  dnnl::primitive conv;
  dnnl::reorder weights_reorder;
  memory user_weights, weights;  // HWIO view (handle set per call), blocked.
  memory::desc src, dst, conv_scratch, reorder_scratch;
};

dnnl::engine& Engine() {
  static dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  return engine;
}

const dnnl::primitive_attr& UserScratchpad() {
  static const dnnl::primitive_attr attr = [] {
    dnnl::primitive_attr a;
    a.set_scratchpad_mode(dnnl::scratchpad_mode::user);
    return a;
  }();
  return attr;
}

// `desc`'s scratch memory in the one shared buffer, grown as needed. Must be
// called with Lock() held, and used before the lock is released.
memory Scratchpad(const memory::desc& desc) {
  static void* buffer = nullptr;
  static size_t capacity = 0;
  const size_t page = 4096, bytes = (desc.get_size() + page - 1) / page * page;
  if (bytes > capacity) {
    std::free(buffer);
    buffer = std::aligned_alloc(page, bytes);
    if (!buffer) throw std::bad_alloc();
    capacity = bytes;
  }
  return memory(desc, Engine(), buffer);
}

// A reorder from `from` to `to` that takes a user scratchpad; its
// scratchpad's description goes to *scratch.
dnnl::reorder Reorder(const memory& from, const memory& to,
                      memory::desc* scratch) {
  dnnl::reorder::primitive_desc pd(from, to, UserScratchpad());
  *scratch = pd.scratchpad_desc();
  return dnnl::reorder(pd);
}

Plan MakePlan(Pass pass, const Problem& p) {
  auto& eng = Engine();
  // The weights are in the activations' type, their gradient in float32.
  const dt weights_type = pass == Pass::kBwdWeights ? dt::f32 : p.type;
  const memory::dims w_dims{p.f, p.c, p.k, p.k};
  memory::desc src({p.n, p.c, p.h, p.w}, p.type, tag::nhwc);
  memory::desc dst({p.n, p.f, p.ho, p.wo}, p.type, tag::nhwc);
  memory::desc hwio(w_dims, weights_type, tag::hwio);
  memory::desc any_w(w_dims, p.type, tag::any);
  memory::dims strides{p.stride, p.stride}, lo{p.pt, p.pl}, hi{p.pb, p.pr};
  const auto alg = dnnl::algorithm::convolution_direct;
  const auto& attr = UserScratchpad();
  dnnl::convolution_forward::primitive_desc fwd(
      eng, dnnl::prop_kind::forward_training, alg, src, any_w, dst, strides,
      lo, hi, attr);
  Plan plan;
  plan.src = src;
  plan.dst = dst;
  plan.user_weights = memory(hwio, eng, nullptr);
  if (pass == Pass::kFwd) {
    plan.conv = dnnl::convolution_forward(fwd);
    plan.conv_scratch = fwd.scratchpad_desc();
    plan.weights = memory(fwd.weights_desc(), eng);
    plan.weights_reorder = Reorder(plan.user_weights, plan.weights,
                                   &plan.reorder_scratch);
  } else if (pass == Pass::kBwdData) {
    dnnl::convolution_backward_data::primitive_desc bwd(
        eng, alg, src, any_w, dst, strides, lo, hi, fwd, attr);
    plan.conv = dnnl::convolution_backward_data(bwd);
    plan.conv_scratch = bwd.scratchpad_desc();
    plan.weights = memory(bwd.weights_desc(), eng);
    plan.weights_reorder = Reorder(plan.user_weights, plan.weights,
                                   &plan.reorder_scratch);
  } else {
    memory::desc any_dw(w_dims, dt::f32, tag::any);
    dnnl::convolution_backward_weights::primitive_desc bwd(
        eng, alg, src, any_dw, dst, strides, lo, hi, fwd, attr);
    plan.conv = dnnl::convolution_backward_weights(bwd);
    plan.conv_scratch = bwd.scratchpad_desc();
    plan.weights = memory(bwd.diff_weights_desc(), eng);
    plan.weights_reorder = Reorder(plan.weights, plan.user_weights,
                                   &plan.reorder_scratch);
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
    auto reorder = [&](const memory& from, const memory& to) {
      plan.weights_reorder.execute(
          stream, {{DNNL_ARG_FROM, from}, {DNNL_ARG_TO, to},
                   {DNNL_ARG_SCRATCHPAD, Scratchpad(plan.reorder_scratch)}});
      stream.wait();  // The conv reuses the scratchpad.
    };
    auto conv = [&](int x_arg, int w_arg, int y_arg) {
      plan.conv.execute(stream, {{x_arg, src}, {w_arg, plan.weights},
                                 {y_arg, dst},
                                 {DNNL_ARG_SCRATCHPAD,
                                  Scratchpad(plan.conv_scratch)}});
      stream.wait();
    };
    if (pass == Pass::kFwd) {
      reorder(plan.user_weights, plan.weights);
      conv(DNNL_ARG_SRC, DNNL_ARG_WEIGHTS, DNNL_ARG_DST);
    } else if (pass == Pass::kBwdData) {
      reorder(plan.user_weights, plan.weights);
      conv(DNNL_ARG_DIFF_SRC, DNNL_ARG_WEIGHTS, DNNL_ARG_DIFF_DST);
    } else {
      conv(DNNL_ARG_SRC, DNNL_ARG_DIFF_WEIGHTS, DNNL_ARG_DIFF_DST);
      reorder(plan.weights, plan.user_weights);
    }
  });
}

using Any = ffi::AnyBuffer;
using AnyOut = ffi::Result<ffi::AnyBuffer>;

// oneDNN's name for a buffer's element type; float32 and bfloat16 only (the
// Python side checks before it calls).
dt TypeOf(const Any& buffer) {
  switch (buffer.element_type()) {
    case ffi::DataType::F32: return dt::f32;
    case ffi::DataType::BF16: return dt::bf16;
    default: throw std::invalid_argument("not float32 or bfloat16");
  }
}

// x: (N,H,W,C) activations, y: (N,Ho,Wo,F), k: kernel size.
Problem Describe(const Any& x, ffi::Span<const int64_t> y, int64_t k,
                 int64_t stride, int64_t pt, int64_t pb, int64_t pl,
                 int64_t pr) {
  auto d = x.dimensions();
  return {d[0], d[1], d[2], d[3], y[3], k, y[1], y[2], stride, pt, pb, pl,
          pr, TypeOf(x)};
}

// Describe() that turns a bad element type into an FFI error.
template <typename Call>
ffi::Error Described(Call call) {
  try {
    return call();
  } catch (const std::invalid_argument& e) {
    return ffi::Error(ffi::ErrorCode::kInvalidArgument,
                      std::string("oneDNN call: ") + e.what());
  }
}

ffi::Error ConvFwd(Any x, Any w, AnyOut y, int64_t stride, int64_t pad_top,
                   int64_t pad_bottom, int64_t pad_left, int64_t pad_right) {
  return Described([&] {
    auto p = Describe(x, y->dimensions(), w.dimensions()[0], stride, pad_top,
                      pad_bottom, pad_left, pad_right);
    return Run(Pass::kFwd, p, x.untyped_data(), w.untyped_data(),
               y->untyped_data());
  });
}

ffi::Error ConvBwdData(Any dy, Any w, AnyOut dx, int64_t stride,
                       int64_t pad_top, int64_t pad_bottom, int64_t pad_left,
                       int64_t pad_right) {
  return Described([&] {
    auto p = Describe(*dx, dy.dimensions(), w.dimensions()[0], stride,
                      pad_top, pad_bottom, pad_left, pad_right);
    return Run(Pass::kBwdData, p, dx->untyped_data(), w.untyped_data(),
               dy.untyped_data());
  });
}

ffi::Error ConvBwdWeights(Any x, Any dy, AnyOut dw, int64_t stride,
                          int64_t pad_top, int64_t pad_bottom,
                          int64_t pad_left, int64_t pad_right) {
  return Described([&] {
    auto p = Describe(x, dy.dimensions(), dw->dimensions()[0], stride,
                      pad_top, pad_bottom, pad_left, pad_right);
    return Run(Pass::kBwdWeights, p, x.untyped_data(), dw->untyped_data(),
               dy.untyped_data());
  });
}

// ------------------------------------------------------------ max pool --

struct PoolPlan {
  dnnl::primitive pool;
  memory::desc src, dst, workspace, scratch;
};

// p.f is unused (== p.c), p.k is the window.
PoolPlan MakePoolPlan(bool forward, const Problem& p) {
  auto& eng = Engine();
  memory::desc src({p.n, p.c, p.h, p.w}, p.type, tag::nhwc);
  memory::desc dst({p.n, p.c, p.ho, p.wo}, p.type, tag::nhwc);
  memory::dims strides{p.stride, p.stride}, kernel{p.k, p.k}, dilation{0, 0},
      lo{p.pt, p.pl}, hi{p.pb, p.pr};
  const auto alg = dnnl::algorithm::pooling_max;
  dnnl::pooling_forward::primitive_desc fwd(
      eng, dnnl::prop_kind::forward_training, alg, src, dst, strides, kernel,
      dilation, lo, hi, UserScratchpad());
  const memory::desc ws = fwd.workspace_desc();
  if (ws.get_size() != static_cast<size_t>(p.n * p.ho * p.wo * p.c))
    throw std::runtime_error("oneDNN's pooling workspace is not one byte per "
                             "output: " + std::to_string(ws.get_size()));
  if (forward)
    return {dnnl::pooling_forward(fwd), src, dst, ws, fwd.scratchpad_desc()};
  dnnl::pooling_backward::primitive_desc bwd(
      eng, alg, src, dst, strides, kernel, dilation, lo, hi, fwd,
      UserScratchpad());
  return {dnnl::pooling_backward(bwd), src, dst, ws, bwd.scratchpad_desc()};
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
                               {DNNL_ARG_WORKSPACE, workspace},
                               {DNNL_ARG_SCRATCHPAD,
                                Scratchpad(plan.scratch)}});
  });
}

using U8 = ffi::Buffer<ffi::U8, 4>;
using U8Out = ffi::ResultBuffer<ffi::U8, 4>;

ffi::Error MaxPoolFwd(Any x, AnyOut y, U8Out ws, int64_t window,
                      int64_t stride, int64_t pad_top, int64_t pad_bottom,
                      int64_t pad_left, int64_t pad_right) {
  return Described([&] {
    auto p = Describe(x, y->dimensions(), window, stride, pad_top, pad_bottom,
                      pad_left, pad_right);
    return RunPool(true, p, x.untyped_data(), y->untyped_data(),
                   ws->untyped_data());
  });
}

ffi::Error MaxPoolBwd(Any dy, U8 ws, AnyOut dx, int64_t window,
                      int64_t stride, int64_t pad_top, int64_t pad_bottom,
                      int64_t pad_left, int64_t pad_right) {
  return Described([&] {
    auto p = Describe(*dx, dy.dimensions(), window, stride, pad_top,
                      pad_bottom, pad_left, pad_right);
    return RunPool(false, p, dx->untyped_data(), dy.untyped_data(),
                   ws.untyped_data());
  });
}

// -------------------------------------------------------------- matmul --

// c = op(a) op(b), op a transpose where asked: a (M,K) or (K,M), b (K,N) or
// (N,K), c (M,N), all row-major. c's type may differ from a's and b's
// (float32 from bfloat16: a 1x1's weight gradient).
struct MatmulPlan {
  dnnl::primitive matmul;
  memory::desc a, b, c, scratch;
};

MatmulPlan MakeMatmulPlan(int64_t m, int64_t k, int64_t n, bool ta, bool tb,
                          dt in, dt out) {
  memory::desc a({m, k}, in, ta ? tag::ba : tag::ab);
  memory::desc b({k, n}, in, tb ? tag::ba : tag::ab);
  memory::desc c({m, n}, out, tag::ab);
  dnnl::matmul::primitive_desc pd(Engine(), a, b, c, UserScratchpad());
  return {dnnl::matmul(pd), a, b, c, pd.scratchpad_desc()};
}

ffi::Error Matmul(Any a, Any b, AnyOut c, bool trans_a, bool trans_b) {
  return Described([&] {
    auto ad = a.dimensions(), cd = c->dimensions();
    const int64_t m = cd[0], n = cd[1], k = trans_a ? ad[0] : ad[1];
    const dt in = TypeOf(a), out = TypeOf(*c);
    return Guarded("matmul", [&](dnnl::stream& stream) {
      auto key = std::make_tuple(m, k, n, trans_a, trans_b,
                                 static_cast<int>(in), static_cast<int>(out));
      MatmulPlan& plan = Cached<MatmulPlan>(key, [&] {
        return MakeMatmulPlan(m, k, n, trans_a, trans_b, in, out);
      });
      auto& eng = Engine();
      memory am(plan.a, eng, a.untyped_data()),
          bm(plan.b, eng, b.untyped_data()),
          cm(plan.c, eng, c->untyped_data());
      plan.matmul.execute(stream, {{DNNL_ARG_SRC, am}, {DNNL_ARG_WEIGHTS, bm},
                                   {DNNL_ARG_DST, cm},
                                   {DNNL_ARG_SCRATCHPAD,
                                    Scratchpad(plan.scratch)}});
    });
  });
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

// Two 4-D operands, one result.
auto ConvBinding() {
  return WindowAttrs(ffi::Ffi::Bind().Arg<Any>().Arg<Any>().Ret<Any>());
}

XLA_FFI_DEFINE_HANDLER_SYMBOL(OnednnConvFwd, ConvFwd, ConvBinding());
XLA_FFI_DEFINE_HANDLER_SYMBOL(OnednnConvBwdData, ConvBwdData, ConvBinding());
XLA_FFI_DEFINE_HANDLER_SYMBOL(OnednnConvBwdWeights, ConvBwdWeights,
                              ConvBinding());
XLA_FFI_DEFINE_HANDLER_SYMBOL(
    OnednnMaxPoolFwd, MaxPoolFwd,
    WindowAttrs(ffi::Ffi::Bind().Arg<Any>().Ret<Any>().Ret<U8>()
                    .Attr<int64_t>("window")));
XLA_FFI_DEFINE_HANDLER_SYMBOL(
    OnednnMaxPoolBwd, MaxPoolBwd,
    WindowAttrs(ffi::Ffi::Bind().Arg<Any>().Arg<U8>().Ret<Any>()
                    .Attr<int64_t>("window")));
XLA_FFI_DEFINE_HANDLER_SYMBOL(
    OnednnMatmul, Matmul,
    ffi::Ffi::Bind().Arg<Any>().Arg<Any>().Ret<Any>()
        .Attr<bool>("trans_a").Attr<bool>("trans_b"));
