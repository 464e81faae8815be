"""The torchvision sets dltrain reads from a local folder, apart from their reading (dltrain.data.images) so that
a run's checks can name their files without importing numpy, pandas or torch."""

# torchvision class, the folder it reads under data.root, and where to get the files
VISION_SETS = {
    "mnist": ("MNIST", "MNIST/raw", "http://yann.lecun.com/exdb/mnist/"),
    "fashion_mnist": ("FashionMNIST", "FashionMNIST/raw", "https://github.com/zalandoresearch/fashion-mnist"),
    "cifar10": ("CIFAR10", "cifar-10-batches-py", "https://www.cs.toronto.edu/~kriz/cifar.html"),
}
