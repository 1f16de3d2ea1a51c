"""Lightning callbacks: backbone freezing, signal checkpoints and exact resume, validation media, throughput."""
