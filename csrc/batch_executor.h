// ExecuteBatch: the part of an instance thread's work shared by every
// scheduler: gather inputs, run, time and credit the execution.
#pragma once

#include "host_memory_pool.h"
#include "model_runtime.h"

namespace pyserver {

// Gathers the inputs of a multi-request batch into buffers from `pool` (may
// be null for schedulers that never batch), runs `runtime`, sets every
// request's compute timestamps and credits the execution to the first
// successful request. A runtime that leaves a request without status or
// result fails it with INTERNAL. Blocks for the inference; no locks held.
void ExecuteBatch(ModelRuntime* runtime, HostMemoryPool* pool, Batch* batch);

}  // namespace pyserver
