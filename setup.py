"Package metadata read from settings.ini, the nbdev 2 way."
from configparser import ConfigParser
import setuptools, shlex

config = ConfigParser(delimiters=['='])
config.read('settings.ini', encoding='utf-8')
cfg = config['DEFAULT']

licenses = {'apache2': ('Apache Software License 2.0', 'OSI Approved :: Apache Software License')}
statuses = ['1 - Planning', '2 - Pre-Alpha', '3 - Alpha', '4 - Beta', '5 - Production/Stable', '6 - Mature', '7 - Inactive']
lic = licenses[cfg['license']]
requirements = shlex.split(cfg.get('requirements', ''))
offline_requirements = shlex.split(cfg.get('offline_requirements', ''))
workbench_requirements = shlex.split(cfg.get('workbench_requirements', ''))
dev_requirements = shlex.split(cfg.get('dev_requirements', ''))
min_python = cfg['min_python']

setuptools.setup(
    name=cfg['lib_name'],
    version=cfg['version'],
    description=cfg['description'],
    long_description=open('README.md', encoding='utf-8').read(),
    long_description_content_type='text/markdown',
    license=lic[0],
    classifiers=['Development Status :: ' + statuses[int(cfg['status'])],
                 'Intended Audience :: ' + cfg['audience'].title(),
                 'License :: ' + lic[1],
                 'Natural Language :: ' + cfg['language'].title(),
                 'Programming Language :: Python :: ' + min_python],
    url=cfg['git_url'],
    author=cfg['author'], author_email=cfg['author_email'],
    keywords=cfg['keywords'].split(),
    packages=setuptools.find_packages(include=['artist_hotline', 'artist_hotline.*']),
    include_package_data=True,
    package_data={'artist_hotline': ['scenarios/*.yaml']},  # the eval's starter set
    install_requires=requirements,
    # `pip install artist-hotline` is the lean cloud server; [offline] adds the offline engines, [workbench] the notebooks' tools
    extras_require={'offline': offline_requirements, 'workbench': workbench_requirements,
                    'dev': offline_requirements + workbench_requirements + dev_requirements},
    python_requires='>=' + min_python,
    entry_points={'console_scripts': cfg.get('console_scripts', '').split(),
                  'nbdev': [f"{cfg['lib_path']}={cfg['lib_path']}._modidx:d"]},
    zip_safe=False,
)
