"""Lowering graphs to loop IR and backend code (see the LLVM backend issue)."""
