#include "tests/helpers.h"
#include "common/error.h"
#include "train/fold.h"
#include "train/model.h"
#include "spec/spec.h"

using namespace shrink;

namespace {
int64_t total_params(const ModelSpec& s) { return total_cost(s).params; }
int64_t total_macs(const ModelSpec& s) { return total_cost(s).macs; }
std::string error_of(const std::string& text, std::vector<int64_t> input = {1, 16, 16}) {
  try {
    parse_spec(text, input, 10);
  } catch (const UserError& e) {
    return e.what();
  }
  return "";
}
}  // namespace

CATCH_TEST_CASE("presets parse and have the documented sizes", "[spec]") {
  auto s = parse_spec("usps_student", {1, 16, 16}, 10);
  CATCH_CHECK(s.layers.size() == 13);
  CATCH_CHECK(s.layers[0].name == "conv1");
  CATCH_CHECK_FALSE(s.layers[0].bias);  // conv before bn: no bias
  CATCH_CHECK(s.layers.back().bias);
  // conv 1*16*9 + bn 32 + conv 16*32*9 + bn 64 + conv 32*64*9 + bn 128 + linear 64*10+10
  CATCH_CHECK(total_params(s) == 144 + 32 + 4608 + 64 + 18432 + 128 + 650);
  CATCH_CHECK(total_macs(s) == 16 * 16 * 16 * 9 + 8 * 8 * 32 * 16 * 9 + 4 * 4 * 64 * 32 * 9 + 640);
  for (const auto& name : preset_names()) {
    bool cifar = name == "resnet20" || name == "resnet18" || name == "mobilenet_v2";
    auto input = cifar ? std::vector<int64_t>{3, 32, 32} : std::vector<int64_t>{1, 16, 16};
    CATCH_CHECK_NOTHROW(parse_spec(name, input, 10));
  }
  CATCH_CHECK(total_params(parse_spec("resnet20", {3, 32, 32}, 10)) > 260000);
}

CATCH_TEST_CASE("to_string round-trips to the same spec", "[spec]") {
  for (const auto& text : {std::string("usps_teacher"), std::string("resnet20"), std::string("lenet5"),
                           std::string("conv(8,5,s=2,bias=1) relu6 dwconv(k=3) a=bn dropout(0.25) flatten linear(classes,bias=0)"),
                           std::string("conv(8) hardswish avgpool(2) hardswish gap linear(classes)"),
                           std::string("conv(8) sigmoid gap linear(classes)")}) {
    auto input = text == "resnet20" ? std::vector<int64_t>{3, 32, 32} : std::vector<int64_t>{1, 16, 16};
    auto s1 = parse_spec(text, input, 10);
    auto s2 = parse_spec(s1.to_string(), input, 10);
    CATCH_CHECK(s1.to_string() == s2.to_string());
    CATCH_CHECK(total_params(s1) == total_params(s2));
  }
}

CATCH_TEST_CASE("parse errors name the column and token", "[spec]") {
  CATCH_CHECK(error_of("conv(16) bn reluu gap linear(10)").find("column 13 ('reluu')") != std::string::npos);
  CATCH_CHECK(error_of("conv(16,q=2) gap linear(10)").find("unknown argument 'q'") != std::string::npos);
  CATCH_CHECK(error_of("conv(16 gap linear(10)").find("unbalanced") != std::string::npos);
  CATCH_CHECK(error_of("conv(x) gap linear(10)").find("not an integer") != std::string::npos);
  CATCH_CHECK(error_of("a=conv(16) a=bn gap linear(10)").find("used twice") != std::string::npos);
  CATCH_CHECK(error_of("conv(16) add(nothere) gap linear(10)").find("no layer named 'nothere'") != std::string::npos);
  CATCH_CHECK(error_of("conv(16) gap linear(7)").find("10 classes") != std::string::npos);
  CATCH_CHECK(error_of("conv(16) maxpool(32) gap linear(10)").find("larger than") != std::string::npos);
  CATCH_CHECK(error_of("c=conv(16) conv(8) add(c) gap linear(10)").find("shapes differ") != std::string::npos);
  CATCH_CHECK(error_of("").find("empty") != std::string::npos);
  // Sizes whose products do not fit 64 bits are an error, not an overflow (found by the fuzzer's UBSan).
  CATCH_CHECK(error_of("conv(16777216,k=1,p=16777216) gap linear(10)", {1, 1, 1}).find("sizes too large") != std::string::npos);
  CATCH_CHECK(error_of("flatten linear(10)", {1 << 20, 1 << 20, 1 << 20}).find("sizes too large") != std::string::npos);
}

CATCH_TEST_CASE("built module matches the spec's shapes and parameter count", "[spec][model]") {
  for (const auto& name : {"usps_teacher", "usps_student", "lenet5", "mlp_300_100"}) {
    SpecNet net(parse_spec(name, {1, 16, 16}, 10));
    int64_t params = 0;
    for (const auto& p : net->parameters()) params += p.numel();
    CATCH_CHECK(params == total_params(net->spec()));
    CATCH_CHECK(net->forward(torch::randn({3, 1, 16, 16})).sizes() == torch::IntArrayRef({3, 10}));
  }
  SpecNet res(parse_spec("resnet20", {3, 32, 32}, 10));
  CATCH_CHECK(res->forward(torch::randn({2, 3, 32, 32})).sizes() == torch::IntArrayRef({2, 10}));
  CATCH_CHECK(res->named_parameters().contains("b7pc.weight"));  // projection shortcut of stage 3
}

CATCH_TEST_CASE("residual add computes the sum of its inputs", "[spec][model]") {
  SpecNet net(parse_spec("a=conv(4,1,bias=1) b=conv(4,1,bias=1) s=add(a) flatten linear(classes)", {4, 2, 2}, 3));
  net->eval();
  auto x = torch::randn({2, 4, 2, 2});
  std::map<std::string, torch::Tensor> taps;
  net->forward_with(x, {"a", "b", "s"}, taps);
  CATCH_CHECK(torch::allclose(taps["s"], taps["a"] + taps["b"]));
  auto conv_a = std::dynamic_pointer_cast<torch::nn::Conv2dImpl>(net->layer_module("a"));
  CATCH_CHECK(torch::allclose(taps["a"], conv_a->forward(x)));
}

CATCH_TEST_CASE("batchnorm folding gives the same outputs in eval mode", "[spec][fold]") {
  SpecNet net(parse_spec("c=conv(8) b=bn relu conv(8,bias=1) bn r=relu add(c) gap linear(16) bn linear(classes)", {3, 8, 8}, 5));
  torch::NoGradGuard no_grad;
  for (auto& b : net->named_buffers()) {
    if (b.key().find("running_mean") != std::string::npos) b.value().uniform_(-1, 1);
    if (b.key().find("running_var") != std::string::npos) b.value().uniform_(0.5, 2);
  }
  for (auto& p : net->named_parameters()) p.value().uniform_(-1, 1);
  net->eval();
  auto folded = fold_batchnorm(net);
  // conv1's output also feeds the add, so its batchnorm stays; the other two fold.
  CATCH_CHECK(folded.model->spec().layers.size() == net->spec().layers.size() - 2);
  CATCH_CHECK(folded.renamed.count("bn2"));
  CATCH_CHECK(folded.renamed.at("bn3") == "linear1");
  auto x = torch::randn({4, 3, 8, 8});
  CATCH_CHECK(torch::allclose(folded.model->forward(x), net->forward(x), 1e-4, 1e-5));
}

CATCH_TEST_CASE("mobilenet_v2 and resnet18 presets: small-input stems and a width argument", "[spec][presets]") {
  // torchvision's counts with a 3x3 stride-1 stem and a 10-class classifier: ResNet-18 the CIFAR
  // 11,173,962; MobileNetV2 3,504,872 - 1281 * 990 (the stem conv's size does not depend on its stride).
  CATCH_CHECK(total_params(parse_spec("resnet18", {3, 32, 32}, 10)) == 11173962);
  CATCH_CHECK(total_params(parse_spec("mobilenet_v2", {3, 32, 32}, 10)) == 2236682);
  CATCH_CHECK(total_params(parse_spec("mobilenet_v2(width=0.5)", {3, 32, 32}, 10)) == 700490);
  for (const std::string name : {"resnet18", "mobilenet_v2", "resnet18(width=0.5)", "mobilenet_v2(width=0.5)", "mobilenet_v2(width=1.4)"}) {
    for (const std::vector<int64_t>& input : {std::vector<int64_t>{3, 32, 32}, std::vector<int64_t>{1, 28, 28}}) {
      CATCH_CAPTURE(name, input);
      auto spec = parse_spec(name, input, 10);
      auto info = analyze(spec);
      int pool = spec.index_of(name.rfind("mobilenet", 0) == 0 ? "pool" : "gap1");
      CATCH_REQUIRE(pool >= 0);
      CATCH_CHECK(info[pool].in_shape[1] == 4);  // 32 and 28 both end at 4x4 before the global pool
      CATCH_CHECK(info[pool].in_shape[2] == 4);
      CATCH_CHECK(spec.layers[0].stride == 1);
      CATCH_CHECK(spec.layers.back().out == 10);
    }
  }
  CATCH_CHECK(total_params(parse_spec("mobilenet_v2(width=0.5)", {3, 32, 32}, 10)) < total_params(parse_spec("mobilenet_v2", {3, 32, 32}, 10)));
  CATCH_CHECK(total_params(parse_spec("resnet18(width=0.5)", {3, 32, 32}, 10)) < total_params(parse_spec("resnet18", {3, 32, 32}, 10)));
  auto half = parse_spec("mobilenet_v2(width=0.5)", {3, 32, 32}, 10);
  CATCH_CHECK(half.layer("stem").out == 16);
  CATCH_CHECK(half.layer("b2_project").out == 16);  // 24 * 0.5 = 12, rounded to a multiple of 8 (torchvision)
  CATCH_CHECK(half.layer("b3_expand").out == 96);
  CATCH_CHECK(half.layer("b3_dw").depthwise);
  CATCH_CHECK(half.layer("b3_add").inputs == std::vector<std::string>{"b3_project_bn", "b2_project_bn"});
  CATCH_CHECK(half.index_of("b2_add") < 0);  // 16 -> 24 channels: no residual
  CATCH_CHECK(half.layer("head").out == 1280);  // scaled only by a width above 1
  CATCH_CHECK(parse_spec("mobilenet_v2(width=1.4)", {3, 32, 32}, 10).layer("head").out == 1792);
  CATCH_CHECK(parse_spec("resnet18(width=0.5)", {3, 32, 32}, 10).layer("b8c2").out == 256);
  CATCH_CHECK(parse_spec("resnet18", {3, 32, 32}, 10).layer("b3pc").stride == 2);  // 1x1 projection opening stage 2
  // Spaces inside the one token are dropped, as in layers.
  CATCH_CHECK(parse_spec(" mobilenet_v2( width = 0.5 ) ", {3, 32, 32}, 10).to_string() == half.to_string());
  SpecNet net(half);
  int64_t params = 0;
  for (const auto& p : net->parameters()) params += p.numel();
  CATCH_CHECK(params == total_params(half));
  CATCH_CHECK(net->forward(torch::randn({2, 3, 32, 32})).sizes() == torch::IntArrayRef({2, 10}));
  SpecNet res(parse_spec("resnet18(width=0.25)", {1, 28, 28}, 10));
  CATCH_CHECK(res->forward(torch::randn({2, 1, 28, 28})).sizes() == torch::IntArrayRef({2, 10}));
}

CATCH_TEST_CASE("a preset's bad arguments are errors naming them", "[spec][presets]") {
  CATCH_CHECK(error_of("mobilenet_v2(depth=2)", {3, 32, 32}).find("unknown argument 'depth' (it takes: width)") != std::string::npos);
  CATCH_CHECK(error_of("resnet18(width=0)", {3, 32, 32}).find("width=0 must be more than 0") != std::string::npos);
  CATCH_CHECK(error_of("resnet18(width=wide)", {3, 32, 32}).find("width=wide is not a number") != std::string::npos);
  CATCH_CHECK(error_of("mobilenet_v2(width=0.5,width=1)", {3, 32, 32}).find("'width' given twice") != std::string::npos);
  CATCH_CHECK(error_of("mobilenet_v2(0.5)", {3, 32, 32}).find("not key=value") != std::string::npos);
  CATCH_CHECK(error_of("resnet20(width=2)", {3, 32, 32}).find("unknown argument 'width' (it takes no arguments)") != std::string::npos);
  CATCH_CHECK(error_of("usps_student()").empty());
  // A preset is the whole spec: followed by layers, its name is no layer type.
  CATCH_CHECK(error_of("usps_student relu").find("unknown layer type 'usps_student'") != std::string::npos);
}

CATCH_TEST_CASE("new arguments and kinds round-trip, and specs without them print as before", "[spec]") {
  const std::vector<int64_t> input{1, 16, 16};
  const std::string args = "conv(8,d=2) bn(eps=0.001) relu conv(8,p=1,pt=0,pl=2,pb=1) hardsigmoid(alpha=0.2,beta=0.4) "
                           "maxpool(3,2,p=1,ceil=1) avgpool(3,2,ceil=1,include_pad=0) leaky_relu(0.2) tanh elu(0.5) softplus mish gelu prelu prelu(per_channel=1) gap linear(classes)";
  const std::string merges = "x=conv(8) relu gap(keep=1) conv(8,1) hs=hardsigmoid m=mul(x,hs) c=concat(m,x) concat(x,c,m) conv(4,1) concat(x) "
                             "conv(8,1) mul(x) gap linear(classes)";
  const std::string moves = "x=conv(8) l=slice(0,2) r=slice(2,8,from=x) concat(r,l) shuffle(2) gap linear(classes)";
  const std::string gate = "x=conv(8) gap linear(8) sigmoid unflatten mul(x) gap linear(classes)";
  CATCH_CHECK(analyze(parse_spec(gate, input, 10))[4].out_shape == std::vector<int64_t>{8, 1, 1});
  CATCH_CHECK(error_of("conv(8) unflatten gap linear(classes)").find("unflatten needs features") != std::string::npos);
  for (const std::string& text : {args, merges, moves, gate}) {
    auto s1 = parse_spec(text, input, 10);
    auto s2 = parse_spec(s1.to_string(), input, 10);
    CATCH_CHECK(s1.to_string() == s2.to_string());
    CATCH_CHECK(total_params(s1) == total_params(s2));
    CATCH_CHECK(total_macs(s1) == total_macs(s2));
  }
  std::string a = parse_spec(args, input, 10).to_string();
  for (const char* part : {"conv1=conv(8,k=3,s=1,d=2,p=2,g=1,bias=0)", "bn1=bn(eps=0.001)", "p=1,g=1,bias=1,pt=0,pl=2)",
                           "hardsigmoid1=hardsigmoid(alpha=0.2,beta=0.4)", "maxpool1=maxpool(k=3,s=2,p=1,ceil=1)",
                           "avgpool1=avgpool(k=3,s=2,p=0,ceil=1,include_pad=0)", "leaky_relu1=leaky_relu(alpha=0.2)", "tanh1=tanh elu1=elu(alpha=0.5)", "gap1=gap linear1"}) {
    CATCH_CAPTURE(part, a);
    CATCH_CHECK(a.find(part) != std::string::npos);
  }
  CATCH_CHECK(a.find("pb=") == std::string::npos);  // a side equal to p is not stated
  auto spec = parse_spec(args, input, 10);
  CATCH_CHECK(analyze(spec)[3].out_shape == std::vector<int64_t>{8, 15, 17});  // pads 0 top, 2 left, 1 bottom, 1 right
  CATCH_CHECK(analyze(spec)[5].out_shape == std::vector<int64_t>{8, 8, 9});    // ceil: 15 -> 8, 17 -> 9
  CATCH_CHECK(parse_spec(merges, input, 10).to_string() ==
              "x=conv(8,k=3,s=1,p=1,g=1,bias=1) relu1=relu gap1=gap(keep=1) conv2=conv(8,k=1,s=1,p=0,g=1,bias=1) "
              "hs=hardsigmoid(alpha=0.16666666666666666,beta=0.5) m=mul(x,hs) c=concat(m,x) concat2=concat(x,c,m) "
              "conv3=conv(4,k=1,s=1,p=0,g=1,bias=1) concat3=concat(conv3,x) conv4=conv(8,k=1,s=1,p=0,g=1,bias=1) mul2=mul(conv4,x) "
              "gap2=gap linear1=linear(10,bias=1)");  // explicit names count too: c=concat is the first concat
  CATCH_CHECK(analyze(parse_spec(merges, input, 10))[7].out_shape == std::vector<int64_t>{32, 16, 16});  // 8 + 16 + 8
  CATCH_CHECK(parse_spec(moves, input, 10).to_string() ==
              "x=conv(8,k=3,s=1,p=1,g=1,bias=1) l=slice(0,2) r=slice(2,8,from=x) concat1=concat(r,l) shuffle1=shuffle(2) gap1=gap linear1=linear(10,bias=1)");
  CATCH_CHECK(analyze(parse_spec(moves, input, 10))[1].out_shape == std::vector<int64_t>{2, 16, 16});
  CATCH_CHECK(error_of("conv(6) shuffle(4) gap linear(classes)").find("shuffle groups=4 must divide its 6 channels") != std::string::npos);
  CATCH_CHECK(error_of("conv(6) slice(4,7) gap linear(classes)").find("slice(4, 7) must keep channels 0 <= start < end <= 6") != std::string::npos);
  CATCH_CHECK(error_of("conv(6) slice(3,3) gap linear(classes)").find("must keep channels") != std::string::npos);
  CATCH_CHECK(error_of("conv(6) slice(2) gap linear(classes)").find("slice needs its first and end channel") != std::string::npos);
  CATCH_CHECK(error_of("conv(6) shuffle gap linear(classes)").find("shuffle needs its number of groups") != std::string::npos);
  // A kernel of another width: its shapes, weight, MACs; a width equal to the height is not stated.
  auto wide = parse_spec("conv(4,k=1,kw=5,p=0,pl=2,pr=1) gap linear(classes)", input, 10);
  CATCH_CHECK(wide.to_string().find("conv1=conv(4,k=1,kw=5,s=1,p=0,g=1,bias=1,pl=2,pr=1)") == 0);
  CATCH_CHECK(analyze(wide)[0].out_shape == std::vector<int64_t>{4, 16, 15});
  CATCH_CHECK(analyze(wide)[0].weight_shape == std::vector<int64_t>{4, 1, 1, 5});
  CATCH_CHECK(analyze(wide)[0].macs == 4 * 16 * 15 * 5);
  CATCH_CHECK(parse_spec("conv(4,k=3,kw=3) gap linear(classes)", input, 10).to_string().find("kw=") == std::string::npos);
  CATCH_CHECK(error_of("conv(4,kw=0) gap linear(classes)").find("sizes must be at least 1") != std::string::npos);
  CATCH_CHECK(error_of("conv(4,k=1,kw=19,p=0) gap linear(classes)").find("kernel is larger than the padded input") != std::string::npos);
  // Strides, pool windows and pool padding of another width than height.
  auto strided = parse_spec("conv(4,s=2,sw=1) maxpool(k=2,kw=1,sw=1) avgpool(k=1,kw=3,s=1,sw=2,pw=1) gap linear(classes)", input, 10);
  CATCH_CHECK(strided.to_string().find("conv1=conv(4,k=3,s=2,sw=1,p=1,g=1,bias=1) maxpool1=maxpool(k=2,s=2,p=0,kw=1,sw=1) "
                                       "avgpool1=avgpool(k=1,s=1,p=0,kw=3,sw=2,pw=1)") == 0);
  CATCH_CHECK(analyze(strided)[0].out_shape == std::vector<int64_t>{4, 8, 16});
  CATCH_CHECK(analyze(strided)[1].out_shape == std::vector<int64_t>{4, 4, 16});
  CATCH_CHECK(analyze(strided)[2].out_shape == std::vector<int64_t>{4, 4, 8});
  CATCH_CHECK(parse_spec("maxpool(k=2,kw=2,s=2,sw=2,p=1,pw=1) gap linear(classes)", input, 10).to_string().find("w=") == std::string::npos);
  // A pool's stride is its kernel along each axis unless given (torch's MaxPool2d((2, 1)) is 2x1),
  // and the printed form states it.
  for (const char* text : {"maxpool(2,kw=1) gap linear(classes)", "maxpool(k=2,s=2,kw=1) gap linear(classes)", "maxpool(2,2,kw=1,sw=3) gap linear(classes)"}) {
    auto pooled = parse_spec(text, input, 10);
    CATCH_CAPTURE(text);
    CATCH_CHECK(parse_spec(pooled.to_string(), input, 10).to_string() == pooled.to_string());
  }
  CATCH_CHECK(analyze(parse_spec("maxpool(2,kw=1) gap linear(classes)", input, 10))[0].out_shape == std::vector<int64_t>{1, 8, 16});
  CATCH_CHECK(analyze(parse_spec("maxpool(k=2,s=2,kw=1) gap linear(classes)", input, 10))[0].out_shape == std::vector<int64_t>{1, 8, 8});
  CATCH_CHECK(error_of("conv(4,sw=0) gap linear(classes)").find("sizes must be at least 1") != std::string::npos);
  CATCH_CHECK(error_of("maxpool(k=3,kw=1,p=1) gap linear(classes)").find("padding 1 along the width must be at most half the kernel's width 1") != std::string::npos);
  CATCH_CHECK(error_of("maxpool(k=3,pw=-1) gap linear(classes)").find("pw=-1 is out of range") != std::string::npos);
  // Without the new arguments the canonical text is what it was before they existed.
  CATCH_CHECK(parse_spec("usps_student", input, 10).to_string() ==
              "conv1=conv(16,k=3,s=1,p=1,g=1,bias=0) bn1=bn relu1=relu maxpool1=maxpool(k=2,s=2,p=0) "
              "conv2=conv(32,k=3,s=1,p=1,g=1,bias=0) bn2=bn relu2=relu maxpool2=maxpool(k=2,s=2,p=0) "
              "conv3=conv(64,k=3,s=1,p=1,g=1,bias=0) bn3=bn relu3=relu gap1=gap linear1=linear(10,bias=1)");
  std::string teacher = parse_spec("usps_teacher", input, 10).to_string();
  for (const char* quiet : {",d=", ",pt=", ",pl=", ",pb=", ",pr=", "kw=", "sw=", "pw=", "ceil", "include_pad", "keep", "eps"}) {
    CATCH_CAPTURE(quiet);
    CATCH_CHECK(teacher.find(quiet) == std::string::npos);
  }
}

CATCH_TEST_CASE("shape errors of mul, concat and ceil-mode average pools", "[spec]") {
  CATCH_CHECK(error_of("a=conv(8) conv(4) mul(a) gap linear(10)").find("mul of conv2 and a (8x16x16): shapes must be equal, or one C,1,1") !=
              std::string::npos);
  CATCH_CHECK(error_of("x=conv(8) gap(keep=1) conv(4,1) mul(x) gap linear(10)").find("shapes must be equal") != std::string::npos);
  CATCH_CHECK(error_of("a=conv(8) maxpool(2) concat(a) gap linear(10)").find("concat of maxpool1 and a (8x16x16): only the channels may differ") !=
              std::string::npos);
  CATCH_CHECK(error_of("conv(4) avgpool(3,2,ceil=1) gap linear(10)").find("avgpool with ceil=1 and include_pad=1 has a window past the padding") !=
              std::string::npos);
  CATCH_CHECK(error_of("conv(4) avgpool(3,2,ceil=1,include_pad=0) gap linear(10)").empty());
  CATCH_CHECK(error_of("conv(4) avgpool(3,2,ceil=1,p=1) gap linear(10)", {1, 15, 15}).empty());  // the last window ends at the padding's end
  CATCH_CHECK(error_of("conv(4) mul gap linear(10)").find("mul needs the layer(s) it reads") != std::string::npos);
  CATCH_CHECK(error_of("a=conv(4) b=conv(4,from=input) conv(4,from=input) concat(a=a,c=b) gap linear(10)").find("c= is given without b=") !=
              std::string::npos);
}

CATCH_TEST_CASE("the block examples of docs/models.md parse", "[spec]") {
  const std::string v3 =  // MobileNetV3-style: expand, depthwise, squeeze-excite, project, residual
      "stem=conv(40) bn r=hardswish b1_expand=conv(240,1) bn hardswish b1_dw=dwconv(5) bn x=hardswish\n"
      "gap(keep=1) b1_se_reduce=conv(64,1) relu b1_se_expand=conv(240,1) hs=hardsigmoid b1_se=mul(x,hs)\n"
      "b1_project=conv(40,1) bn b1_add=add(r) gap linear(classes)";
  auto s = parse_spec(v3, {3, 32, 32}, 10);
  CATCH_CHECK(s.layer("b1_se_reduce").bias);  // no batchnorm after it
  CATCH_CHECK(analyze(s)[s.index_of("b1_se")].out_shape == std::vector<int64_t>{240, 32, 32});
  SpecNet net(s);
  CATCH_CHECK(net->forward(torch::randn({2, 3, 32, 32})).sizes() == torch::IntArrayRef({2, 10}));
  auto inception = parse_spec("a=conv(16,1,from=input) bn ra=relu b=conv(16,5,from=input) bn rb=relu cat=concat(ra,rb) conv(32) bn relu gap linear(classes)",
                              {3, 32, 32}, 10);
  CATCH_CHECK(analyze(inception)[inception.index_of("cat")].out_shape == std::vector<int64_t>{32, 32, 32});
}

