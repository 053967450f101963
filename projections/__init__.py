"""What is derived from the event log: current memories, full text, embeddings, entities, links.

Every table here can be dropped and rebuilt from the log, and `memory verify` checks that a
rebuild agrees with what is on disk.
"""
