"""The gRPC transport: the grpc.aio listener and the v1 GRPCService."""
