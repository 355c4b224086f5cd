"""From distinct-device counts to people: the estimator (windows, spans, ranges, levels), the
visibility model, the HyperLogLog error model and the privacy rules. Pure: imports core only
(and numpy/scipy), never I/O libraries.
"""
