// TensorFlowRuntime: TensorFlow GraphDef and SavedModel models run through
// TensorFlow's C API from the instance thread (no Python, no GIL).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "host_memory_pool.h"
#include "native_runtime.h"
#include "status.h"
#include "tensor.h"
#include "tensorflow_api.h"

namespace pyserver {

// Where the library is and how a session is made; the same for both model
// formats.
struct TensorFlowSessionOptions {
  // libtensorflow_cc.so.2 (or libtensorflow.so.2) of the installed wheel.
  std::string library_path;
  // A serialized tensorflow.ConfigProto (thread pools, GPU options).
  std::string config_proto;
  // GraphDef only: the default device of the imported ops, e.g.
  // "/device:GPU:0"; empty = TensorFlow's placement.
  std::string device;
};

// A graph and a TF_Session over it. Owns both and frees them when
// destroyed. Not thread safe; a runtime owns it once loaded.
class TensorFlowSession {
 public:
  // Imports the serialized GraphDef `graph_def` and opens a session on it.
  // Fails with INVALID_ARG when TensorFlow rejects the graph, INTERNAL when
  // the session cannot be made, UNAVAILABLE when the library cannot be
  // loaded. Blocks; any thread.
  static Status FromGraphDef(const TensorFlowSessionOptions& options,
                             const std::string& graph_def,
                             std::unique_ptr<TensorFlowSession>* session);

  // Loads the SavedModel in `export_dir` whose MetaGraph carries exactly
  // `tags`, and returns that MetaGraphDef serialized in `*meta_graph` (for
  // the caller to read its signatures). Fails with INVALID_ARG when
  // TensorFlow cannot load it. Blocks; any thread.
  static Status FromSavedModel(const TensorFlowSessionOptions& options,
                               const std::string& export_dir,
                               const std::vector<std::string>& tags,
                               std::unique_ptr<TensorFlowSession>* session,
                               std::string* meta_graph);

  ~TensorFlowSession();
  TensorFlowSession(const TensorFlowSession&) = delete;
  TensorFlowSession& operator=(const TensorFlowSession&) = delete;

  // The tensor named `name` ("op" = "op:0", or "op:k"). Fails with
  // INVALID_ARG naming what is missing.
  Status FindTensor(const std::string& name, tf_c::TF_Output* output) const;

  const TensorFlowApi* api() const { return api_; }
  tf_c::TF_Session* handle() const { return session_; }

 private:
  TensorFlowSession(const TensorFlowApi* api, tf_c::TF_Graph* graph, tf_c::TF_Session* session)
      : api_(api), graph_(graph), session_(session) {}

  const TensorFlowApi* const api_;  // process lifetime
  tf_c::TF_Graph* graph_;
  tf_c::TF_Session* session_;
};

// One instance of a TensorFlow model. Run() feeds the batch's inputs to the
// session as tensors over the caller's bytes (no copy; strings become views)
// and copies each fetched output once into pooled memory, because
// TensorFlow owns its output buffers and an output may alias an input or a
// variable.
class TensorFlowRuntime : public NativeRuntime {
 public:
  // Binds the config's tensors to the graph: `graph_tensors` names the graph
  // tensor of each config input, then of each config output, in config
  // order. Fails with INVALID_ARG when a tensor is missing or its type
  // differs from the config (`what` names the model kind in the message,
  // "graph" or "SavedModel"). Takes the session; `pool` is borrowed and must
  // outlive the runtime. Any thread; does not block.
  static Status Create(NativeRuntimeConfig config, HostMemoryPool* pool,
                       std::unique_ptr<TensorFlowSession> session,
                       const std::vector<std::string>& graph_tensors, const std::string& what,
                       std::unique_ptr<TensorFlowRuntime>* runtime);

  ~TensorFlowRuntime() override;

  // See NativeRuntime::Run. A failure of the session is INTERNAL with
  // TensorFlow's message after "tensorflow: ". Public for the runtime's own
  // test; the scheduler calls it through Execute().
  Status Run(uint32_t batch_size, const std::vector<TensorView>& inputs,
             const std::vector<uint32_t>& wanted, std::vector<OutputTensor>* outputs) override;

 private:
  TensorFlowRuntime(NativeRuntimeConfig config, HostMemoryPool* pool,
                    std::unique_ptr<TensorFlowSession> session);

  Status NewInputTensor(const TensorView& view, tf_c::TF_Tensor** tensor) const;
  Status CopyOutput(const tf_c::TF_Tensor* tensor, uint32_t index, OutputTensor* output) const;

  const TensorFlowApi* const api_;
  std::unique_ptr<TensorFlowSession> session_;
  tf_c::TF_Status* status_;                // reused by each Run
  std::vector<tf_c::TF_Output> feeds_;     // config input order
  std::vector<tf_c::TF_Output> fetchable_;  // config output order
  // Scratch of Run(), kept to avoid allocations per call.
  std::vector<tf_c::TF_Tensor*> input_values_;
  std::vector<tf_c::TF_Output> fetches_;
  std::vector<tf_c::TF_Tensor*> output_values_;
};

}  // namespace pyserver
