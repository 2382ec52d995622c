// concat along channels: oneDNN's concat, which copies and needs one data type. In int8 every
// input goes onto the output's grid first (one shared scale: a reorder for an input on another
// grid, none for one already on it), so the concat itself only copies.
#include "runtime/loaded.h"
#include "runtime/ops/ops.h"

namespace shrink::rt::detail {

Act build_concat(Builder& b, const OpContext& c) {
  memory::desc dst_md = b.output_desc(c);
  std::vector<memory::desc> sources;
  std::vector<Arg> args;
  for (size_t k = 0; k < c.inputs.size(); ++k) {
    Act x = c.inputs[k];
    // A float input with a point of its own is rounded there first, as the simulation does.
    if (c.out_int8 && x.scale == 0 && b.model().point_scale(c.points[k])) x = b.quantize(x, c.points[k], c.layer.name);
    if (!c.out_int8) {
      x = b.as_float(x);
    } else if (x.scale != c.out_scale || b.desc(x.slot).data_type() != c.out_type) {
      const memory::desc& d = b.desc(x.slot);
      // From int8 values q (x = q * s_in) or floats x, to round(x / s_out).
      x = Act{b.reorder(x.slot, memory::desc(d.dims(), c.out_type, Builder::plain(d)), (x.scale > 0 ? x.scale : 1.0f) / c.out_scale), c.out_scale};
    }
    sources.push_back(b.desc(x.slot));
    args.push_back({DNNL_ARG_MULTIPLE_SRC + static_cast<int>(k), x.slot, {}});
  }
  dnnl::concat::primitive_desc pd(dst_md, 1, sources, b.engine(), user_scratchpad());
  Act result{b.slot(dst_md), c.out_scale};
  args.push_back({DNNL_ARG_DST, result.slot, {}});
  b.add(dnnl::concat(pd), pd.scratchpad_desc(), std::move(args));
  return result;
}

}  // namespace shrink::rt::detail
