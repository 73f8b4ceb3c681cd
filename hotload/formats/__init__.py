"""Monticello and source formats, read and written: s-expressions, chunk source, `.mcz`, Tonel and FileTree
folders, packing, and the load order of a set of packages."""
