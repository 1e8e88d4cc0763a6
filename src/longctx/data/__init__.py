"""Inputs of both studies: synthetic smoke text, the pinned real samples, RULER variable tracking."""
