def main(argv=None):
    print("placeholder")
