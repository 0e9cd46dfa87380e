"""Plans (社区划分方案): the partition, the engine, memory, hand edits, the workflow,
documents, files, scale and adoption."""
