"""Checkpoints that `vlp train --fsdp` writes with torch.distributed.checkpoint (DCP),
read without running code from them.

    model.N/  config.json, tokenizer files, trainer_state.{json,pt}
              dcp/.metadata, dcp/__R_0.distcp   (each rank's shards; flattened keys
                                                 model.<name>, optimizer.<...>)

DCP reads its `.metadata` with pickle and the non-tensor entries of a state dict
(optimizer settings) with torch.load(weights_only=False), both of which could run code
from the file. Here the metadata is unpickled with only DCP's own record classes, torch's
dtypes and sizes allowed, and every non-tensor entry goes through weights_only=True first.
"""

from __future__ import annotations

import io
import pickle
import warnings
from pathlib import Path

import torch

from vlp.errors import VLPError

DCP_DIR = "dcp"
METADATA = ".metadata"


def is_dcp(directory: str | Path) -> bool:
    """Whether `directory` is a checkpoint whose weights are DCP shards."""
    return (Path(directory) / DCP_DIR / METADATA).is_file()


class _MetadataUnpickler(pickle.Unpickler):
    # Everything DCP's FileSystemWriter pickles into .metadata, and nothing else.
    _RECORDS = {
        "torch.distributed.checkpoint.metadata": {
            "Metadata", "TensorStorageMetadata", "TensorProperties", "ChunkStorageMetadata",
            "BytesStorageMetadata", "MetadataIndex", "StorageMeta", "_MEM_FORMAT_ENCODING"},
        "torch.distributed.checkpoint.filesystem": {"_StorageInfo"},
        "torch.serialization": {"_get_layout"},
        "pathlib": {"PosixPath", "PurePosixPath", "WindowsPath", "PureWindowsPath"},
        "collections": {"OrderedDict"},
    }

    def find_class(self, module: str, name: str):
        if module == "torch" and (name == "Size" or isinstance(getattr(torch, name, None),
                                                               (torch.dtype, torch.memory_format))):
            return getattr(torch, name)
        if name in self._RECORDS.get(module, ()):
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"{module}.{name} is not part of a DCP checkpoint's metadata")


def read_metadata(shards: Path):
    """The `.metadata` of DCP shards in `shards`, unpickled with DCP's record types only."""
    path = Path(shards) / METADATA
    try:
        with open(path, "rb") as f:
            return _MetadataUnpickler(f).load()
    except (OSError, pickle.UnpicklingError, EOFError, AttributeError, TypeError) as err:
        raise VLPError(f"{path}: refused or unreadable DCP metadata ({err})") from None


def _reader(directory: Path):
    from torch.distributed.checkpoint import FileSystemReader
    from torch.distributed.checkpoint.metadata import StorageMeta

    class SafeReader(FileSystemReader):
        def read_metadata(self, *args, **kwargs):
            metadata = read_metadata(Path(self.path))
            if getattr(metadata, "storage_meta", None) is None:
                metadata.storage_meta = StorageMeta()
            metadata.storage_meta.load_id = self.load_id
            return metadata

    return SafeReader(str(directory))


def _planner():
    from torch.distributed.checkpoint import DefaultLoadPlanner

    class SafePlanner(DefaultLoadPlanner):
        def load_bytes(self, read_item, value: io.BytesIO) -> None:
            try:
                plain = torch.load(value, weights_only=True)  # refuses anything but data
            except pickle.UnpicklingError as err:
                first = (str(err).strip().splitlines() or ["not plain data"])[0]
                raise VLPError(f"DCP entry {read_item.dest_index.fqn}: refused ({first})") from None
            # DefaultLoadPlanner unpickles freely; what it gets now is only our own bytes.
            again = io.BytesIO()
            torch.save(plain, again)
            again.seek(0)
            super().load_bytes(read_item, again)

    return SafePlanner()


def load(state: dict, directory: str | Path, no_dist: bool = False) -> None:
    """Fill `state` ({"model": ..., "optimizer": ...} or a part of it) in place from the
    DCP shards of checkpoint `directory`. With `no_dist` this process reads alone (any
    number of ranks may have written it); otherwise every rank of the group takes part."""
    shards = Path(directory) / DCP_DIR
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.api import CheckpointException

    read_metadata(shards)  # a refusal here is one line, not DCP's per-rank report
    try:
        with warnings.catch_warnings():
            # no_dist: DCP warns that it reads in a single process, which is the point.
            warnings.filterwarnings("ignore", "torch.distributed is disabled")
            dcp.load(state, storage_reader=_reader(shards), planner=_planner(), no_dist=no_dist)
    except VLPError:
        raise
    except (CheckpointException, RuntimeError, KeyError, ValueError) as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise VLPError(f"{shards}: does not fit this model ({first[:300]})") from None


def read_weights(model: torch.nn.Module, directory: str | Path) -> torch.nn.Module:
    """`model` with the weights of the DCP checkpoint `directory`, gathered from every
    rank's shards by this process alone."""
    # DCP reads into the tensors it is given: the model's own, with no second copy.
    load({"model": model.state_dict()}, directory, no_dist=True)
    return model

