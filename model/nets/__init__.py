"""The MLFFM-SegDiff network: its blocks, the multi-level feature fusion, the dual-path U-Net and the prompt branch."""
