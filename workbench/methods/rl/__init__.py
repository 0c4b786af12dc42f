"""RL with verifiable rewards (GRPO, RAFT): parameters, losses, sampling and modules."""
