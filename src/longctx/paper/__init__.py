"""The paper pipeline: result JSON -> generated LaTeX (tables, macros) and figures -> NeurIPS/main.pdf.

Presentation only (excluded from the code hash of results): nothing here runs an experiment.
"""
