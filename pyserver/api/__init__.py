"""The protocol-neutral server API: requests, responses and status types
(pyserver.server.InferenceServer serves them; pyserver.Server is the
public in-process form)."""

from pyserver.api.request import LATEST, InferenceRequest, InferInput, RequestedOutput
from pyserver.api.response import Class, InferenceResponse, InferOutput
from pyserver.api.status import (IndexEntry, ModelMetadata, ModelStatus, TensorMetadata,
                                 VersionStatus)

__all__ = ["LATEST", "InferenceRequest", "InferInput", "RequestedOutput", "Class",
           "InferenceResponse", "InferOutput", "IndexEntry", "ModelMetadata", "ModelStatus",
           "TensorMetadata", "VersionStatus"]
