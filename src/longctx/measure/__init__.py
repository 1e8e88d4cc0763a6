"""The one measurement layer: peak memory (CUDA allocator or exact tensor accounting), timing, token hashes."""
