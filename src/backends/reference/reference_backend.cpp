// The float64 reference as a backend: slow, exact, and available on every device (it runs on the
// host CPU), so any configuration can be checked against it.
#include "moe/valid_layer.hpp"
#include "mxmoe/backend.hpp"

namespace mxmoe {

namespace {

class ReferenceMoe final : public PreparedMoe {
 public:
  ReferenceMoe(std::shared_ptr<const MoeLayer> layer, const ExecutionPlan& plan)
      : layer_(std::move(layer)), plan_(plan) {
    plan_.padding.check_layer(layer_->shape, plan_.backend);
  }
  // Padding changes no real output (zero weights meet zero inputs; padded units give SwiGLU(0, 0) =
  // 0), so the reference runs the real layer on the real columns and pads its output with zeros.
  MoeOutput forward(std::span<const float> hidden, int tokens, const Routing* routing) override {
    const PaddingPlan& padding = plan_.padding;
    const ReferenceOptions options{.routing = routing, .threads = plan_.threads};
    if (padding.is_identity()) return detail::reference_forward_valid(*layer_, hidden, tokens, plan_.scheme, options);
    std::vector<float> real(static_cast<size_t>(tokens) * padding.hidden);
    unpad_hidden_into(hidden, tokens, padding, real);
    MoeOutput out = detail::reference_forward_valid(*layer_, real, tokens, plan_.scheme, options);
    out.output = pad_hidden(out.output, tokens, padding);
    return out;
  }

 private:
  std::shared_ptr<const MoeLayer> layer_;
  ExecutionPlan plan_;
};

}  // namespace

BackendDeclaration reference_backend() {
  BackendDeclaration b;
  b.name = "reference";
  b.summary = "float64 reference on the host CPU; exact, slow; the ground truth";
  b.runs_on_any_device = true;
  b.schemes = {Scheme::w4a16, Scheme::w4a8, Scheme::w4a8_token, Scheme::w4a4, Scheme::w4a32};
  b.rank = 0;
  b.prepare = [](std::shared_ptr<const MoeLayer> layer, const ExecutionPlan& plan) -> std::unique_ptr<PreparedMoe> {
    return std::make_unique<ReferenceMoe>(std::move(layer), plan);
  };
  return b;
}

}  // namespace mxmoe
