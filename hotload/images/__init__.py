"""Smalltalk images: running GNU Smalltalk and Squeak, putting the loader into an image, and the example app
with its demo."""
