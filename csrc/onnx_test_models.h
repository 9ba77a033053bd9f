// Small ONNX models encoded by hand (ONNX is protobuf; a few ModelProto
// fields suffice), for the OrtRuntime tests and micro-benchmark. Not part of
// the core library.
#pragma once

#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "onnxruntime_abi.h"

namespace pyserver {
namespace onnx_test {

inline std::string Varint(uint64_t v) {
  std::string out;
  while (v >= 0x80) {
    out.push_back(static_cast<char>((v & 0x7f) | 0x80));
    v >>= 7;
  }
  out.push_back(static_cast<char>(v));
  return out;
}
inline std::string IntField(int field, int64_t v) {
  return Varint(static_cast<uint64_t>(field) << 3) + Varint(static_cast<uint64_t>(v));
}
inline std::string BytesField(int field, const std::string& bytes) {
  return Varint(static_cast<uint64_t>(field) << 3 | 2) + Varint(bytes.size()) + bytes;
}

// ValueInfoProto of a tensor; a dim of -1 is symbolic ("N" when first).
inline std::string TensorInfo(const std::string& name, int elem_type,
                              const std::vector<int64_t>& dims) {
  std::string shape;
  for (size_t i = 0; i < dims.size(); ++i) {
    shape += BytesField(1, dims[i] >= 0 ? IntField(1, dims[i])
                                        : BytesField(2, i == 0 ? "N" : "d" + std::to_string(i)));
  }
  std::string tensor = IntField(1, elem_type) + BytesField(2, shape);
  return BytesField(1, name) + BytesField(2, BytesField(1, tensor));
}

inline std::string Node(const std::string& op, const std::vector<std::string>& in,
                        const std::vector<std::string>& out) {
  std::string node;
  for (const auto& i : in) node += BytesField(1, i);
  for (const auto& o : out) node += BytesField(2, o);
  return node + BytesField(4, op);
}

// TensorProto of float weights (raw little-endian data).
inline std::string FloatInitializer(const std::string& name, const std::vector<int64_t>& dims,
                                    const std::vector<float>& values) {
  std::string tensor;
  for (int64_t d : dims) tensor += IntField(1, d);
  tensor += IntField(2, ort::kFloat);
  tensor += BytesField(8, name);
  std::string raw(values.size() * sizeof(float), '\0');
  std::memcpy(&raw[0], values.data(), raw.size());
  return tensor + BytesField(9, raw);
}

inline std::string Model(const std::vector<std::string>& nodes,
                         const std::vector<std::string>& inputs,
                         const std::vector<std::string>& outputs,
                         const std::vector<std::string>& initializers = {}) {
  std::string graph;
  for (const auto& n : nodes) graph += BytesField(1, n);
  graph += BytesField(2, "g");
  for (const auto& t : initializers) graph += BytesField(5, t);
  for (const auto& i : inputs) graph += BytesField(11, i);
  for (const auto& o : outputs) graph += BytesField(12, o);
  std::string opset = BytesField(1, "") + IntField(2, 13);
  return IntField(1, 8) + BytesField(7, graph) + BytesField(8, opset);
}

// A, B [N, dims] float -> SUM = A + B, DIFF = A - B. With `open_outputs`
// the outputs' second dimension is left symbolic.
inline std::string AddSub(int64_t dims = 4, bool open_outputs = false) {
  const int64_t out = open_outputs ? -1 : dims;
  return Model({Node("Add", {"A", "B"}, {"SUM"}), Node("Sub", {"A", "B"}, {"DIFF"})},
               {TensorInfo("A", ort::kFloat, {-1, dims}), TensorInfo("B", ort::kFloat, {-1, dims})},
               {TensorInfo("SUM", ort::kFloat, {-1, out}), TensorInfo("DIFF", ort::kFloat, {-1, out})});
}

// X [N, ?] of `type` -> Y = X.
inline std::string Identity(int type) {
  return Model({Node("Identity", {"X"}, {"Y"})}, {TensorInfo("X", type, {-1, -1})},
               {TensorInfo("Y", type, {-1, -1})});
}

// X [N, in] -> Y [N, out] = Gemm(Relu(Gemm(X, W1, B1)), W2, B2), seeded
// weights. With `open_outputs` Y's second dimension is left symbolic.
inline std::string Mlp(int64_t in, int64_t hidden, int64_t out, bool open_outputs = false) {
  std::mt19937 rng(0);
  std::normal_distribution<float> normal(0.0f, 0.05f);
  const auto values = [&](int64_t n) {
    std::vector<float> v(static_cast<size_t>(n));
    for (float& x : v) x = normal(rng);
    return v;
  };
  return Model({Node("Gemm", {"X", "W1", "B1"}, {"H0"}), Node("Relu", {"H0"}, {"H"}),
                Node("Gemm", {"H", "W2", "B2"}, {"Y"})},
               {TensorInfo("X", ort::kFloat, {-1, in})},
               {TensorInfo("Y", ort::kFloat, {-1, open_outputs ? -1 : out})},
               {FloatInitializer("W1", {in, hidden}, values(in * hidden)),
                FloatInitializer("B1", {hidden}, values(hidden)),
                FloatInitializer("W2", {hidden, out}, values(hidden * out)),
                FloatInitializer("B2", {out}, values(out))});
}

}  // namespace onnx_test
}  // namespace pyserver
