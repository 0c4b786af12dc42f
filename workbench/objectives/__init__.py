"""What a run is judged by: metrics and rewards (text scores), their registries."""
