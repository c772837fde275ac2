"""The labelling loop: a web app where people label images, consensus, the active-learning queue, exports.

Imported only by ``processor label ...``; the worker never loads it.
"""
