// CallbackRuntime: a ModelRuntime that dispatches to a C function, used by
// the binding layer to run runtimes that live in Python.
#pragma once

#include "model_runtime.h"

namespace pyserver {

// `fn(context, batch)` must set each request's status and result. The
// function is responsible for any interpreter lock it needs; the core calls
// it without holding one.
using ExecuteFn = void (*)(void* context, Batch* batch);

class CallbackRuntime : public ModelRuntime {
 public:
  // `context` is borrowed: its owner keeps it alive while the runtime exists.
  CallbackRuntime(ExecuteFn fn, void* context) : fn_(fn), context_(context) {}

  void Execute(Batch* batch) override { fn_(context_, batch); }

 private:
  ExecuteFn fn_;
  void* context_;
};

}  // namespace pyserver
