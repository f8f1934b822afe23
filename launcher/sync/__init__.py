"""Weight sync from a CPU trainer to the vLLM CPU server (TRL's NCCL path needs CUDA): a gloo transport
behind vLLM's weight-transfer engine registry, and the matching trainer side."""
