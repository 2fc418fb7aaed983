"""(commands are being written)"""
