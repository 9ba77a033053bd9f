#include "python_stub_runtime.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <thread>

extern char** environ;

namespace pyserver {
namespace {

enum MessageKind : uint8_t {
  kInitialize = 1,
  kExecute = 2,
  kFinalize = 3,
  kOk = 10,
  kError = 11,
  kResult = 12,
  kAck = 13,  // the stub has the execute message; the model has not run yet
};

constexpr size_t kAlignment = 64;
constexpr size_t kInitialRegionBytes = 1 << 20;
constexpr uint32_t kMaxFrameBytes = 1u << 30;

size_t Aligned(size_t n) { return (n + kAlignment - 1) / kAlignment * kAlignment; }

// TritonError codes (triton_python_backend_utils.TritonError) as ours.
StatusCode FromTritonError(uint32_t code) {
  switch (code) {
    case 0: return StatusCode::kUnknown;
    case 1: return StatusCode::kInternal;
    case 2: return StatusCode::kNotFound;
    case 3: return StatusCode::kInvalidArg;
    case 4: return StatusCode::kUnavailable;
    case 5: return StatusCode::kUnsupported;
    case 6: return StatusCode::kAlreadyExists;
    case 7: return StatusCode::kUnavailable;  // cancelled
    default: return StatusCode::kInternal;
  }
}

class Writer {
 public:
  explicit Writer(MessageKind kind) { bytes_.resize(4); bytes_.push_back(static_cast<char>(kind)); }
  void U32(uint32_t v) { Raw(&v, 4); }
  void U64(uint64_t v) { Raw(&v, 8); }
  void I64(int64_t v) { Raw(&v, 8); }
  void Str(const std::string& s) {
    U32(static_cast<uint32_t>(s.size()));
    bytes_.append(s);
  }
  // The frame, its length filled in.
  std::string Finish() {
    const uint32_t length = static_cast<uint32_t>(bytes_.size() - 4);
    std::memcpy(&bytes_[0], &length, 4);
    return std::move(bytes_);
  }

 private:
  void Raw(const void* p, size_t n) { bytes_.append(static_cast<const char*>(p), n); }
  std::string bytes_;  // little-endian hosts only (x86_64, aarch64)
};

class Reader {
 public:
  explicit Reader(const std::string& bytes) : bytes_(bytes) {}
  bool U8(uint8_t* v) { return Raw(v, 1); }
  bool U32(uint32_t* v) { return Raw(v, 4); }
  bool U64(uint64_t* v) { return Raw(v, 8); }
  bool I64(int64_t* v) { return Raw(v, 8); }
  bool Str(std::string* s) {
    uint32_t n = 0;
    if (!U32(&n) || bytes_.size() - offset_ < n) return false;
    s->assign(bytes_, offset_, n);
    offset_ += n;
    return true;
  }

 private:
  bool Raw(void* p, size_t n) {
    if (bytes_.size() - offset_ < n) return false;
    std::memcpy(p, bytes_.data() + offset_, n);
    offset_ += n;
    return true;
  }
  const std::string& bytes_;
  size_t offset_ = 0;
};

struct WireTensor {
  std::string name;
  uint32_t type = 0;
  std::vector<int64_t> dims;
  uint64_t offset = 0;
  uint64_t byte_size = 0;
};

bool ReadTensor(Reader* r, WireTensor* t) {
  uint32_t ndim = 0;
  if (!r->Str(&t->name) || !r->U32(&t->type) || !r->U32(&ndim) || ndim > 64) return false;
  t->dims.resize(ndim);
  for (auto& d : t->dims) {
    if (!r->I64(&d)) return false;
  }
  return r->U64(&t->offset) && r->U64(&t->byte_size);
}

const char* SignalName(int sig) {
  switch (sig) {
    case SIGKILL: return "SIGKILL";
    case SIGTERM: return "SIGTERM";
    case SIGSEGV: return "SIGSEGV";
    case SIGABRT: return "SIGABRT";
    case SIGBUS: return "SIGBUS";
    case SIGFPE: return "SIGFPE";
    case SIGILL: return "SIGILL";
    case SIGINT: return "SIGINT";
    case SIGHUP: return "SIGHUP";
    case SIGPIPE: return "SIGPIPE";
    default: return "a signal";
  }
}

std::string DescribeExit(int wait_status) {
  if (WIFEXITED(wait_status)) return "exited with code " + std::to_string(WEXITSTATUS(wait_status));
  if (WIFSIGNALED(wait_status)) {
    const int sig = WTERMSIG(wait_status);
    return "exited on signal " + std::to_string(sig) + " (" + SignalName(sig) + ")";
  }
  return "exited";
}

}  // namespace

// -- SharedRegion -------------------------------------------------------------

Status SharedRegion::Create(const std::string& name, size_t size,
                            std::unique_ptr<SharedRegion>* out) {
  const int fd = memfd_create(name.c_str(), MFD_CLOEXEC);
  if (fd < 0) return Status(StatusCode::kInternal, std::string("memfd_create: ") + strerror(errno));
  std::unique_ptr<SharedRegion> region(new SharedRegion(fd));
  PYSERVER_RETURN_IF_ERROR(region->Reserve(size));
  *out = std::move(region);
  return Status::Success();
}

SharedRegion::~SharedRegion() {
  if (data_ != nullptr) munmap(data_, size_);
  if (fd_ >= 0) close(fd_);
}

Status SharedRegion::Reserve(size_t size) {
  if (size <= size_) return Status::Success();
  const size_t grown = std::max(size, 2 * size_);
  if (ftruncate(fd_, static_cast<off_t>(grown)) != 0) {
    return Status(StatusCode::kInternal, std::string("cannot grow shared memory: ") + strerror(errno));
  }
  return Remap(grown);
}

Status SharedRegion::Remap(size_t size) {
  if (size == size_) return Status::Success();
  void* mapped = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd_, 0);
  if (mapped == MAP_FAILED) {
    return Status(StatusCode::kInternal, std::string("cannot map shared memory: ") + strerror(errno));
  }
  if (data_ != nullptr) munmap(data_, size_);
  data_ = mapped;
  size_ = size;
  return Status::Success();
}

// -- PythonStubRuntime --------------------------------------------------------

Status PythonStubRuntime::Create(NativeRuntimeConfig config, PythonStubOptions options,
                                 HostMemoryPool* pool,
                                 std::unique_ptr<PythonStubRuntime>* runtime) {
  if (options.argv.empty()) return Status(StatusCode::kInvalidArg, "no stub command");
  std::unique_ptr<PythonStubRuntime> created(
      new PythonStubRuntime(std::move(config), std::move(options), pool));
  PYSERVER_RETURN_IF_ERROR(created->Start());
  *runtime = std::move(created);
  return Status::Success();
}

PythonStubRuntime::~PythonStubRuntime() {
  if (Alive()) {
    Status sent = Send(Writer(kFinalize).Finish());
    std::string reply;
    if (sent.IsOk()) Receive(options_.finalize_timeout_ms, &reply);
    const auto deadline = std::chrono::steady_clock::now() +
                          std::chrono::milliseconds(options_.finalize_timeout_ms);
    while (pid_ != 0 && std::chrono::steady_clock::now() < deadline) {
      int wait_status = 0;
      if (waitpid(pid_, &wait_status, WNOHANG) == pid_) {
        pid_ = 0;
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
  }
  Kill();
}

Status PythonStubRuntime::Start() {
  Kill();
  const std::string base = "pyserver-" + config_.model_name;
  PYSERVER_RETURN_IF_ERROR(SharedRegion::Create(base + "-in", kInitialRegionBytes, &inputs_));
  PYSERVER_RETURN_IF_ERROR(SharedRegion::Create(base + "-out", kInitialRegionBytes, &outputs_));
  int pair[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) != 0) {
    return Status(StatusCode::kInternal, std::string("socketpair: ") + strerror(errno));
  }
  // The child gets its ends as descriptors 3, 4 and 5: dup2 in the child
  // clears close-on-exec, which needs sources other than the targets.
  const int sources[3] = {fcntl(pair[1], F_DUPFD_CLOEXEC, 10),
                          fcntl(inputs_->Fd(), F_DUPFD_CLOEXEC, 10),
                          fcntl(outputs_->Fd(), F_DUPFD_CLOEXEC, 10)};
  close(pair[1]);
  std::vector<std::string> args = options_.argv;
  args.push_back("3");
  args.push_back("4");
  args.push_back(std::to_string(inputs_->Size()));
  args.push_back("5");
  args.push_back(std::to_string(outputs_->Size()));
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(&a[0]);
  argv.push_back(nullptr);

  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  for (int i = 0; i < 3; ++i) posix_spawn_file_actions_adddup2(&actions, sources[i], 3 + i);
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  sigset_t none;
  sigemptyset(&none);
  posix_spawnattr_setsigmask(&attr, &none);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK);
  pid_t pid = 0;
  const int spawned = posix_spawn(&pid, argv[0], &actions, &attr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  posix_spawnattr_destroy(&attr);
  for (int fd : sources) close(fd);
  if (spawned != 0) {
    close(pair[0]);
    return Status(StatusCode::kInternal,
                  "cannot start the python model's process: " + std::string(strerror(spawned)));
  }
  pid_ = pid;
  socket_ = pair[0];

  Writer init(kInitialize);
  init.Str(options_.model_file);
  init.Str(options_.args_json);
  std::string reply;
  Status status = Send(init.Finish());
  if (status.IsOk()) status = Receive(options_.initialize_timeout_ms, &reply);
  if (!status.IsOk()) {
    std::string how = status.Code() == StatusCode::kUnavailable && pid_ != 0 ? Reap() : "";
    Kill();
    if (!how.empty()) {
      return Status(StatusCode::kInvalidArg,
                    "the python model's process " + how + " while initialising");
    }
    return Status(StatusCode::kInvalidArg, "the python model did not initialise within " +
                                               std::to_string(options_.initialize_timeout_ms / 1000) +
                                               " s");
  }
  Reader r(reply);
  uint8_t kind = 0;
  r.U8(&kind);
  if (kind != kOk) {
    std::string message = "no reason given";
    if (kind == kError) r.Str(&message);
    Kill();
    return Status(StatusCode::kInvalidArg, "the python model failed to initialise: " + message);
  }
  return Status::Success();
}

bool PythonStubRuntime::Alive() {
  if (pid_ == 0 || socket_ < 0) return false;
  int wait_status = 0;
  if (waitpid(pid_, &wait_status, WNOHANG) == pid_) {
    pid_ = 0;
    Kill();
    return false;
  }
  pollfd p{socket_, POLLIN, 0};
  if (poll(&p, 1, 0) > 0 && (p.revents & (POLLHUP | POLLERR | POLLIN))) {
    // Nothing is due from an idle stub: its socket closed.
    Kill();
    return false;
  }
  return true;
}

std::string PythonStubRuntime::Reap() {
  if (pid_ == 0) return "exited";
  int wait_status = 0;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(2);
  while (true) {
    const pid_t done = waitpid(pid_, &wait_status, WNOHANG);
    if (done == pid_) break;
    if (done < 0 || std::chrono::steady_clock::now() > deadline) {
      kill(pid_, SIGKILL);
      waitpid(pid_, &wait_status, 0);
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  pid_ = 0;
  return DescribeExit(wait_status);
}

void PythonStubRuntime::Kill() {
  if (pid_ != 0) {
    kill(pid_, SIGKILL);
    int wait_status = 0;
    waitpid(pid_, &wait_status, 0);
    pid_ = 0;
  }
  if (socket_ >= 0) {
    close(socket_);
    socket_ = -1;
  }
}

Status PythonStubRuntime::Send(const std::string& frame) {
  size_t sent = 0;
  while (sent < frame.size()) {
    const ssize_t n = send(socket_, frame.data() + sent, frame.size() - sent, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return Status(StatusCode::kUnavailable, "the python model's process is gone");
    sent += static_cast<size_t>(n);
  }
  return Status::Success();
}

Status PythonStubRuntime::Receive(int timeout_ms, std::string* payload) {
  auto read_exactly = [&](char* out, size_t bytes, int wait_ms) -> Status {
    size_t got = 0;
    while (got < bytes) {
      pollfd p{socket_, POLLIN, 0};
      const int ready = poll(&p, 1, wait_ms);
      if (ready < 0 && errno == EINTR) continue;
      if (ready == 0) return Status(StatusCode::kInternal, "timed out");
      const ssize_t n = recv(socket_, out + got, bytes - got, 0);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return Status(StatusCode::kUnavailable, "the python model's process is gone");
      got += static_cast<size_t>(n);
    }
    return Status::Success();
  };
  uint32_t length = 0;
  PYSERVER_RETURN_IF_ERROR(read_exactly(reinterpret_cast<char*>(&length), 4, timeout_ms));
  if (length == 0 || length > kMaxFrameBytes) {
    return Status(StatusCode::kInternal, "the python model's process sent a malformed message");
  }
  payload->resize(length);
  return read_exactly(&(*payload)[0], length, timeout_ms);
}

void PythonStubRuntime::Execute(Batch* batch) {
  // A stub found dead, or one that died before it took the message, is
  // started again and the batch sent once more: the model never saw it.
  Status status;
  bool model_raised = false;
  for (int attempt = 0; attempt < 2; ++attempt) {
    if (!Alive()) {
      Status started = Start();
      if (!started.IsOk()) {
        for (InferRequest* request : batch->requests) {
          request->status = Status(StatusCode::kUnavailable, started.Message());
        }
        return;
      }
    }
    status = RunOnce(batch, &model_raised);
    if (status.Code() != StatusCode::kUnavailable) break;  // kUnavailable: not taken
  }
  if (model_raised && batch->requests.size() > 1 && config_.retry_failed_batch_per_request) {
    Batch alone;
    alone.requests.resize(1);
    for (InferRequest* request : batch->requests) {
      alone.requests[0] = request;
      alone.total_batch_size = request->batch_size;
      Execute(&alone);
    }
    return;
  }
  if (!status.IsOk()) {
    for (InferRequest* request : batch->requests) {
      if (request->status.IsOk()) request->status = status;
    }
  }
}

Status PythonStubRuntime::RunOnce(Batch* batch, bool* model_raised) {
  *model_raised = false;
  const std::vector<InferRequest*>& requests = batch->requests;
  const size_t input_count = config_.inputs.size();
  size_t total = 0;
  for (const InferRequest* request : requests) {
    if (request->inputs.size() != input_count) {
      return Status(StatusCode::kInvalidArg, "a request does not carry every input");
    }
    for (const InputRef& input : request->inputs) total += Aligned(input.byte_size);
  }
  PYSERVER_RETURN_IF_ERROR(inputs_->Reserve(total));

  Writer message(kExecute);
  message.U64(inputs_->Size());
  message.U32(static_cast<uint32_t>(requests.size()));
  size_t offset = 0;
  for (const InferRequest* request : requests) {
    message.U32(static_cast<uint32_t>(input_count));
    for (size_t i = 0; i < input_count; ++i) {
      const InputRef& input = request->inputs[i];
      if (input.byte_size != 0) std::memcpy(inputs_->Data() + offset, input.data, input.byte_size);
      message.Str(config_.inputs[i].name);
      message.U32(static_cast<uint32_t>(config_.inputs[i].type));
      message.U32(static_cast<uint32_t>(input.shape.size()));
      for (int64_t d : input.shape) message.I64(d);
      message.U64(offset);
      message.U64(input.byte_size);
      offset += Aligned(input.byte_size);
    }
    if (request->requested_outputs.empty()) {
      message.U32(static_cast<uint32_t>(config_.outputs.size()));
      for (const TensorSpec& spec : config_.outputs) message.Str(spec.name);
    } else {
      message.U32(static_cast<uint32_t>(request->requested_outputs.size()));
      for (uint32_t index : request->requested_outputs) message.Str(config_.outputs[index].name);
    }
    // Sequence models: what pb_utils.InferenceRequest's correlation_id()
    // and flags() answer (0, "" and 0 otherwise).
    message.U64(request->correlation_id_is_string ? 0 : request->correlation_id);
    message.Str(request->correlation_id_is_string ? request->correlation_string : std::string());
    message.U32(request->sequence_flags);
  }
  Status sent = Send(message.Finish());
  std::string reply;
  if (sent.IsOk()) sent = Receive(-1, &reply);
  if (!sent.IsOk()) {
    Reap();
    Kill();
    return Status(StatusCode::kUnavailable, "the python model's process is gone");
  }
  if (reply.size() != 1 || static_cast<uint8_t>(reply[0]) != kAck) {
    Kill();
    return Status(StatusCode::kInternal, "the python model's process answered out of turn");
  }
  Status received = Receive(-1, &reply);
  if (!received.IsOk()) {
    const std::string how = Reap();
    Kill();
    return Status(StatusCode::kInternal,
                  "the python model's process " + how + " while executing this request");
  }

  Reader r(reply);
  uint8_t kind = 0;
  r.U8(&kind);
  if (kind == kError) {
    std::string text;
    r.Str(&text);
    *model_raised = true;
    return Status(StatusCode::kInternal, "python model: " + text);
  }
  uint64_t out_size = 0;
  uint32_t answers = 0;
  if (kind != kResult || !r.U64(&out_size) || !r.U32(&answers) || answers != requests.size()) {
    Kill();
    return Status(StatusCode::kInternal, "the python model's process sent a malformed answer");
  }
  PYSERVER_RETURN_IF_ERROR(outputs_->Remap(out_size));
  for (InferRequest* request : requests) {
    uint8_t ok = 0;
    if (!r.U8(&ok)) return Status(StatusCode::kInternal, "malformed answer from the python model");
    if (ok == 0) {
      uint32_t code = 0;
      std::string text;
      if (!r.U32(&code) || !r.Str(&text)) {
        return Status(StatusCode::kInternal, "malformed answer from the python model");
      }
      request->status = Status(FromTritonError(code), text);
      continue;
    }
    uint32_t count = 0;
    if (!r.U32(&count)) return Status(StatusCode::kInternal, "malformed answer from the python model");
    std::vector<WireTensor> tensors(count);
    for (auto& t : tensors) {
      if (!ReadTensor(&r, &t) || t.offset > outputs_->Size() ||
          t.byte_size > outputs_->Size() - t.offset) {
        return Status(StatusCode::kInternal, "malformed answer from the python model");
      }
    }
    std::vector<uint32_t> wanted = request->requested_outputs;
    if (wanted.empty()) {
      for (uint32_t i = 0; i < config_.outputs.size(); ++i) wanted.push_back(i);
    }
    request->outputs.clear();
    for (uint32_t index : wanted) {
      const std::string& name = config_.outputs[index].name;
      const WireTensor* found = nullptr;
      for (const auto& t : tensors) {
        if (t.name == name) found = &t;
      }
      if (found == nullptr) {
        request->outputs.clear();
        request->status = Status(StatusCode::kInternal,
                                 "the python model gave no output '" + name + "'");
        break;
      }
      OutputTensor out;
      out.index = index;
      out.type = static_cast<DataType>(found->type);
      out.shape = found->dims;
      out.storage = std::make_shared<PooledBuffer>();
      out.byte_size = found->byte_size;
      Status allocated = pool_->Allocate(std::max<size_t>(found->byte_size, 1), out.storage.get());
      if (!allocated.IsOk()) {
        request->outputs.clear();
        request->status = allocated;
        break;
      }
      if (found->byte_size != 0) {
        std::memcpy(out.storage->Data(), outputs_->Data() + found->offset, found->byte_size);
      }
      request->outputs.push_back(std::move(out));
    }
  }
  return Status::Success();
}

}  // namespace pyserver
