"""The torchvision sets dltrain reads from a local folder, apart from their reading (dltrain.data.images) so that
a run's checks can name their files without importing numpy, pandas or torch."""

# torchvision class, the folder it reads under data.root, and where to get the files
VISION_SETS = {
    "mnist": ("MNIST", "MNIST/raw", "http://yann.lecun.com/exdb/mnist/"),
    "fashion_mnist": ("FashionMNIST", "FashionMNIST/raw", "https://github.com/zalandoresearch/fashion-mnist"),
    "cifar10": ("CIFAR10", "cifar-10-batches-py", "https://www.cs.toronto.edu/~kriz/cifar.html"),
}


def files_not_found(name: str, base) -> str:
    """The line for a torchvision set whose files are not under data.root (`base`)."""
    _, folder, origin = VISION_SETS[name]
    return (f"data={name}: files not found in {base / folder}; set data.download=true to fetch them, "
            f"or put the files from {origin} there (data.root={base})")
