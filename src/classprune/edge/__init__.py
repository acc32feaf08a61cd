"""Shipping a chosen model: sparse and ONNX files (fp32, fp16, int8), channel compaction, evaluation as
shipped, sizes and `classprune predict`."""
