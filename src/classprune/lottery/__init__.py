"""Paper Alg. 1: the lottery-ticket loop (runner), pruning rules and masks, masked training, the
class-dependent loss, training curves, channel tickets and their random-reinit control."""
